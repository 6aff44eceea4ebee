"""The documented generic finding JSON -> Finding. Pure.

    {"namespace": "shop", "pod": "web-7d9f", "severity": "critical",
     "reason": "reverse shell to 203.0.113.9", "source": "my-edr", "rule": "reverse-shell"}

`namespace` and `pod` name the pod; `severity` is a Falco priority word or a Wiz severity word
(see `severity`); `reason` is free text (trimmed into the pod's annotation); `source` names the
reporting tool (free text, only in the annotation and the audit log); `rule` (optional) is
matched against `--rules`; `id` (optional) is echoed in the audit log; `uid` (optional) is the
pod's UID: a pod of that name with another UID (a successor) is not quarantined.
"""

from __future__ import annotations

from typing import Any

from agent.responder import findings, severity

SOURCE = "generic"


def parse(payload: Any) -> findings.Finding:
    body = findings.obj(payload, "the finding")
    return findings.Finding(
        source=SOURCE,
        namespace=findings.text(body.get("namespace"), "namespace"),
        pod=findings.text(body.get("pod"), "pod"),
        severity=findings.level(body.get("severity"), "severity", severity.ANY),
        rule=findings.text(body.get("rule"), "rule"),
        summary=findings.text(body.get("reason"), "reason"),
        reporter=findings.clean(findings.text(body.get("source"), "source"), findings.SOURCE_MAX),
        finding_id=findings.text(body.get("id"), "id"),
        uid=findings.uid(body.get("uid"), "uid"),
    )
