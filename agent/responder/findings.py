"""What a finding is once parsed, whether it warrants quarantine, and the patch that applies it.

Every source's parser produces a `Finding`; `decide` applies the configured threshold and rule
allow-list; `quarantine_patch` is the JSON merge patch that sets the quarantine label and says
who did it and why. Pure: no I/O, the clock is passed in.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping
from typing import Any

from agent.responder import severity

QUARANTINE_LABEL = "podseg.io/quarantine"
QUARANTINE_VALUE = "true"
QUARANTINED_BY = "podseg.io/quarantined-by"
QUARANTINE_REASON = "podseg.io/quarantine-reason"
QUARANTINED_AT = "podseg.io/quarantined-at"
REASON_MAX = 512
SOURCE_MAX = 63
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# A Kubernetes UID: the API server makes every one an RFC 4122 UUID.
_UID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Falco prints this for a field the event does not have (a host process has no pod).
FALCO_ABSENT = "<NA>"


class Malformed(ValueError):
    """The payload is not what its source sends (wrong JSON types, unknown severity word)."""


@dataclasses.dataclass(frozen=True)
class Finding:
    source: str  # falco | wiz | generic: the endpoint, a bounded metric label
    namespace: str = ""
    pod: str = ""
    severity: severity.Severity | None = None
    rule: str = ""
    summary: str = ""  # the finding's own text (Falco output, Wiz control name, reason)
    reporter: str = ""  # who reported it, for the audit trail (Falco hostname, generic source)
    finding_id: str = ""
    # The pod's UID when the payload carries it (`uid`): the finding is about that pod, not a
    # same-named successor. Lower case; "" when the payload does not say.
    uid: str = ""
    # Set by the parser when the payload is about something that is not a live pod.
    not_a_pod: str = ""

    @property
    def names_pod(self) -> bool:
        return bool(self.namespace and self.pod) and not self.not_a_pod


@dataclasses.dataclass(frozen=True)
class Policy:
    min_severity: severity.Severity | None = severity.Severity.CRITICAL
    rules: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True)
class Verdict:
    act: bool
    why: str


def decide(finding: Finding, policy: Policy) -> Verdict:
    """Quarantine when the rule is allow-listed or the severity reaches the threshold."""
    if not finding.names_pod:
        return Verdict(False, finding.not_a_pod or "the finding names no pod (namespace and name)")
    if finding.rule and finding.rule in policy.rules:
        return Verdict(True, f"rule {finding.rule!r} is on the allow-list")
    if policy.min_severity is None:
        return Verdict(False, f"rule {finding.rule!r} is not on the allow-list")
    if finding.severity is None:
        return Verdict(False, "the finding has no severity and its rule is not on the allow-list")
    if finding.severity >= policy.min_severity:
        return Verdict(
            True,
            f"severity {finding.severity.label} is at or above {policy.min_severity.label}",
        )
    return Verdict(
        False,
        f"severity {finding.severity.label} is below the threshold {policy.min_severity.label}",
    )


def valid_namespace(name: str) -> bool:
    return bool(_DNS_LABEL.fullmatch(name))


def invalid_name(finding: Finding) -> str:
    """Why the pod reference cannot be a Kubernetes pod ("" when it can)."""
    if not valid_namespace(finding.namespace):
        return f"namespace {clean(finding.namespace, 80)!r} is not a valid namespace name"
    if len(finding.pod) > 253 or not _DNS_SUBDOMAIN.fullmatch(finding.pod):
        return f"pod {clean(finding.pod, 80)!r} is not a valid pod name"
    return ""


def clean(text: str, limit: int) -> str:
    """One line of printable text, at most `limit` characters (an ellipsis marks a cut)."""
    flat = " ".join(_CONTROL.sub(" ", text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"


def reason(finding: Finding) -> str:
    level = f" ({finding.severity.label})" if finding.severity is not None else ""
    head = f"{finding.source} rule {finding.rule!r}{level}" if finding.rule else finding.source
    text = f"{head}: {finding.summary}" if finding.summary else head
    return clean(text, REASON_MAX)


def quarantined_by(finding: Finding) -> str:
    by = f"podseg-responder/{finding.source}"
    if finding.reporter:
        by += f" ({finding.reporter})"
    return clean(by, SOURCE_MAX + 40)


# The values the agent reads as "quarantined" (agent/calc/containment.py on issue-5): a pod
# labelled with any of them is already contained, so the responder leaves it unchanged.
QUARANTINED_VALUES = frozenset({"true", "yes", "1", "on"})


def is_quarantined(labels: Mapping[str, str] | None) -> bool:
    value = (labels or {}).get(QUARANTINE_LABEL)
    return isinstance(value, str) and value.strip().lower() in QUARANTINED_VALUES


def quarantine_patch(
    finding: Finding, now: datetime.datetime, resource_version: str, uid: str
) -> dict[str, Any]:
    """JSON merge patch: the label, the audit annotations, and the resourceVersion and UID of
    the pod the decision was made on: the API server refuses the patch if the pod changed since
    (409, so two responders racing on one pod produce one change) or is another pod of the
    same name (409 for its other resourceVersion; a UID is immutable, 422)."""
    return {
        "metadata": {
            "uid": uid,
            "resourceVersion": resource_version,
            "labels": {QUARANTINE_LABEL: QUARANTINE_VALUE},
            "annotations": {
                QUARANTINED_BY: quarantined_by(finding),
                QUARANTINE_REASON: reason(finding),
                QUARANTINED_AT: now.astimezone(datetime.UTC)
                .isoformat(timespec="microseconds")
                .replace("+00:00", "Z"),
            },
        }
    }


# -- helpers for the parsers: typed access to JSON with a clear message ------------------------


def obj(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Malformed(f"{where} must be a JSON object, not {type(value).__name__}")
    return value


def text(value: Any, where: str) -> str:
    """A string field; absent/null is ""; numbers are accepted as text; other types are bad."""
    if value is None:
        return ""
    if isinstance(value, (bool, dict, list)):
        raise Malformed(f"{where} must be a string, not {type(value).__name__}")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, escaped in the JSON as \ud800
            raise Malformed(f"{where} is not valid Unicode text") from None
    return str(value).strip()


def uid(value: Any, where: str) -> str:
    """A pod UID field: "" when absent, else a Kubernetes UID (any case; lower-cased)."""
    word = text(value, where).lower()
    if word and not _UID.fullmatch(word):
        raise Malformed(f"{where} {clean(word, 60)!r} is not a Kubernetes UID")
    return word


def level(
    value: Any, where: str, vocabulary: dict[str, severity.Severity]
) -> severity.Severity | None:
    word = text(value, where)
    if not word:
        return None
    try:
        return severity.parse(word, vocabulary)
    except severity.UnknownSeverity as exc:
        raise Malformed(f"{where}: {exc}") from None
