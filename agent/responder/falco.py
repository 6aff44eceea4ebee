"""Falco / falcosidekick webhook JSON -> Finding. Pure.

Falco's `http_output` (with `json_output: true`) and falcosidekick's webhook output post the same
event object: `rule`, `priority` (a Falco priority word), `output` (the rendered message),
`time`, `output_fields` (field name -> value, among them `k8s.ns.name` and `k8s.pod.name` when
the event comes from a pod's container, and `k8s.pod.uid` or the k8smeta plugin's
`k8smeta.pod.uid` when the rule's output names them), plus `hostname`, `source`, `tags` and
(falcosidekick) `uuid`. Falco renders a field the event lacks as `<NA>` (a process on the
host has no pod).
"""

from __future__ import annotations

from typing import Any

from agent.responder import findings, severity

SOURCE = "falco"


def parse(payload: Any) -> findings.Finding:
    body = findings.obj(payload, "the Falco event")
    fields = findings.obj(body.get("output_fields"), "output_fields")
    namespace = _field(fields, "k8s.ns.name")
    pod = _field(fields, "k8s.pod.name")
    not_a_pod = ""
    if not pod:
        container = _field(fields, "container.id")
        where = "a process on the host" if container in ("", "host") else "a container"
        not_a_pod = f"the Falco event names no pod (k8s.pod.name is absent: {where})"
    return findings.Finding(
        source=SOURCE,
        namespace=namespace,
        pod=pod,
        severity=findings.level(body.get("priority"), "priority", severity.FALCO),
        rule=findings.text(body.get("rule"), "rule"),
        summary=findings.text(body.get("output"), "output"),
        reporter=findings.text(body.get("hostname"), "hostname"),
        finding_id=findings.text(body.get("uuid"), "uuid"),
        uid=findings.uid(
            _field(fields, "k8s.pod.uid") or _field(fields, "k8smeta.pod.uid"),
            "output_fields['k8s.pod.uid']",
        ),
        not_a_pod=not_a_pod,
    )


def _field(fields: Any, name: str) -> str:
    value = findings.text(fields.get(name), f"output_fields[{name!r}]")
    return "" if value == findings.FALCO_ABSENT else value
