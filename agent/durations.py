"""Durations as people write them on a command line (`90s`, `30m`, `1h`, `7d`, `2w`). Pure.

One reader for `--flow-retention` (agent) and `--since` (`podseg flows`), so both accept the
same words and reject the same mistakes with the same message.
"""

from __future__ import annotations

import re

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")


def parse(text: str) -> float:
    """Seconds in `text`: a positive number with an optional unit (s, m, h, d, w; default s)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is no duration (expected e.g. 90s, 30m, 1h, 7d)")
    seconds = float(match.group(1)) * UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be positive")
    return seconds
