"""Wiz issue webhook JSON -> Finding. Pure.

A Wiz automation rule posts the body its webhook template renders. The default issue template
has `trigger` (`source`, `type`, `ruleId`, `ruleName` of the automation rule), `issue` (`id`,
`status`, `severity`: CRITICAL/HIGH/MEDIUM/LOW/INFORMATIONAL, `created`), `resource` (the issue's
entity snapshot: `id` = provider id, `name`, `type` = native type such as `Pod`, `cloudPlatform`,
...) and `control` (`id`, `name`, `severity`). Some templates put the snapshot under
`entitySnapshot` and the control under `issue.control`; both are read.

The default template does not carry the Kubernetes namespace: add
`"kubernetesNamespaceName": "{{issue.entitySnapshot.kubernetesNamespaceName}}"` to `resource`
(docs/operations.md). A finding about a container names its pod as
`resource.pod = {"name": ..., "namespace": ...}`. Where the template can render the pod's
Kubernetes UID, it goes in `resource.uid` (a Pod) or `resource.pod.uid` (a Container); Wiz's
own `id` and `providerId` are not the Kubernetes UID and are not read as one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from agent.responder import findings, severity

SOURCE = "wiz"
CLOSED = {"RESOLVED", "REJECTED"}
_SEPARATORS = re.compile(r"[\s_\-:./]+")


def parse(payload: Any) -> findings.Finding:
    body = findings.obj(payload, "the Wiz webhook body")
    issue = findings.obj(body.get("issue"), "issue")
    control = findings.obj(_either(body, "control", issue), "control")
    resource = findings.obj(_either(body, "resource", body, "entitySnapshot"), "resource")
    level = findings.level(issue.get("severity"), "issue.severity", severity.WIZ)
    if level is None:
        level = findings.level(control.get("severity"), "control.severity", severity.WIZ)
    namespace, pod, not_a_pod = _pod_of(resource)
    uid = findings.uid(resource.get("uid"), "resource.uid")
    if _kind(resource) == "container":
        owner = findings.obj(resource.get("pod"), "resource.pod")
        uid = findings.uid(owner.get("uid"), "resource.pod.uid")
    status = findings.text(issue.get("status"), "issue.status").upper()
    if status in CLOSED and not not_a_pod:
        not_a_pod = f"the Wiz issue is {status}"
    return findings.Finding(
        source=SOURCE,
        namespace=namespace,
        pod=pod,
        severity=level,
        rule=findings.text(control.get("name"), "control.name"),
        summary=findings.text(control.get("description"), "control.description")
        or findings.text(control.get("name"), "control.name"),
        reporter=findings.text(
            findings.obj(body.get("trigger"), "trigger").get("ruleName"), "trigger.ruleName"
        ),
        finding_id=findings.text(issue.get("id"), "issue.id"),
        uid=uid,
        not_a_pod=not_a_pod,
    )


def _either(
    first: Mapping[str, Any], key: str, second: Mapping[str, Any], other_key: str = ""
) -> Any:
    """first[key] when present (whatever its type, so a wrong one is reported), else
    second[other_key or key]."""
    value = first.get(key)
    return second.get(other_key or key) if value is None else value


def _kind(resource: Mapping[str, Any]) -> str:
    raw = findings.text(resource.get("type") or resource.get("nativeType"), "resource.type")
    kind = _SEPARATORS.sub("", raw.lower())
    return kind.removeprefix("kubernetes").removeprefix("k8s")


def _pod_of(resource: Mapping[str, Any]) -> tuple[str, str, str]:
    """(namespace, pod, why-not) for the resource a Wiz issue is about."""
    if not resource:
        return "", "", "the Wiz webhook body has no resource"
    kind = _kind(resource)
    namespace = findings.text(
        resource.get("kubernetesNamespaceName") or resource.get("namespace"),
        "resource.kubernetesNamespaceName",
    )
    if kind == "pod":
        pod = findings.text(resource.get("name"), "resource.name")
    elif kind == "container":
        owner = findings.obj(resource.get("pod"), "resource.pod")
        pod = findings.text(owner.get("name"), "resource.pod.name")
        namespace = findings.text(owner.get("namespace"), "resource.pod.namespace") or namespace
        if not pod:
            return namespace, "", "the Wiz container resource does not name its pod (resource.pod)"
    else:
        raw = findings.clean(str(resource.get("type") or resource.get("nativeType") or "?"), 40)
        return "", "", f"the Wiz resource is a {raw}, not a pod or container"
    if pod and not namespace:
        return (
            "",
            pod,
            (
                "the Wiz resource has no namespace: add kubernetesNamespaceName to the "
                "webhook template"
            ),
        )
    return namespace, pod, ""
