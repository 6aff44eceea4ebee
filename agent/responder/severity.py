"""One severity scale for every source, so one `--min-severity` threshold applies to all.

The scale is Falco's priorities (emergency > alert > critical > error > warning > notice >
informational > debug). Wiz severities map onto it: CRITICAL -> critical, HIGH -> error,
MEDIUM -> warning, LOW -> notice, INFORMATIONAL -> informational. The generic JSON accepts
either vocabulary. Pure: no I/O.
"""

from __future__ import annotations

import enum


class Severity(enum.IntEnum):
    DEBUG = 0
    INFORMATIONAL = 1
    NOTICE = 2
    WARNING = 3
    ERROR = 4
    CRITICAL = 5
    ALERT = 6
    EMERGENCY = 7

    @property
    def label(self) -> str:
        return self.name.lower()


class UnknownSeverity(ValueError):
    """A severity word that neither vocabulary knows."""


FALCO: dict[str, Severity] = {s.label: s for s in Severity} | {
    "info": Severity.INFORMATIONAL,  # Falco accepts both spellings in rules
}
WIZ: dict[str, Severity] = {
    "critical": Severity.CRITICAL,
    "high": Severity.ERROR,
    "medium": Severity.WARNING,
    "low": Severity.NOTICE,
    "informational": Severity.INFORMATIONAL,
    "info": Severity.INFORMATIONAL,
}
ANY: dict[str, Severity] = FALCO | WIZ
# `--min-severity none`: no severity is enough on its own; only allow-listed rules act.
NONE = "none"


def parse(word: str, vocabulary: dict[str, Severity]) -> Severity:
    try:
        return vocabulary[word.strip().lower()]
    except KeyError:
        known = ", ".join(sorted(vocabulary))
        raise UnknownSeverity(f"unknown severity {word!r} (expected one of: {known})") from None


def threshold(word: str) -> Severity | None:
    """The `--min-severity` value: a level on the scale, or None for `none`."""
    if word.strip().lower() == NONE:
        return None
    return parse(word, ANY)
