"""Wiz issues parsed into findings: pods and containers name their pod, resolved issues and the
entity-snapshot variant, a VM is not about a pod, severity falls back to the control's."""

from __future__ import annotations

import pytest

from agent.responder import findings, severity, wiz
from tests.support import responder

S = severity.Severity


def test_wiz_issue_about_a_pod() -> None:
    f = wiz.parse(responder.load("wiz_pod_critical"))
    assert (f.source, f.namespace, f.pod) == ("wiz", "shop", "web-7d9f8b6c5-x2k4p")
    assert f.severity is S.CRITICAL
    assert f.rule == "Cryptominer process executed in a publicly exposed pod"
    assert f.finding_id == "b8e41f07-2c9a-4d63-a1f5-77e0c3d9a2b4"
    assert f.reporter == "Contain critical runtime issues on prod-eu"


def test_wiz_issue_about_a_container_names_its_pod_and_high_maps_to_error() -> None:
    f = wiz.parse(responder.load("wiz_container_high"))
    assert (f.namespace, f.pod) == ("payments", "api-5b6c7d8f9-qr7tz")
    assert f.severity is S.ERROR
    assert findings.decide(f, findings.Policy(min_severity=S.ERROR)).act
    assert not findings.decide(f, findings.Policy(min_severity=S.CRITICAL)).act


def test_wiz_resolved_issue_and_entity_snapshot_variant() -> None:
    f = wiz.parse(responder.load("wiz_entitysnapshot_resolved"))
    assert (f.namespace, f.pod) == ("shop", "web-7d9f8b6c5-x2k4p")  # read from entitySnapshot
    assert f.rule == "Cryptominer process executed in a publicly exposed pod"  # issue.control
    verdict = findings.decide(f, findings.Policy())
    assert not verdict.act and "RESOLVED" in verdict.why


def test_wiz_issue_about_a_vm_is_not_about_a_pod() -> None:
    verdict = findings.decide(wiz.parse(responder.load("wiz_vm")), findings.Policy())
    assert not verdict.act and "virtualMachine, not a pod" in verdict.why


def test_wiz_pod_without_namespace_says_how_to_fix_the_template() -> None:
    body = responder.load("wiz_pod_critical")
    del body["resource"]["kubernetesNamespaceName"]
    verdict = findings.decide(wiz.parse(body), findings.Policy())
    assert not verdict.act and "kubernetesNamespaceName" in verdict.why


def test_wiz_severity_falls_back_to_the_control() -> None:
    body = responder.load("wiz_pod_critical")
    del body["issue"]["severity"]
    body["control"]["severity"] = "MEDIUM"
    assert wiz.parse(body).severity is S.WARNING


UID = "5c1f0e2d-9a8b-4c7d-8e6f-0a1b2c3d4e5f"


def test_wiz_pod_uid_is_read_from_the_template_fields_only() -> None:
    pod = responder.load("wiz_pod_critical")
    assert wiz.parse(pod).uid == ""  # Wiz's own ids are not the Kubernetes UID
    pod["resource"]["uid"] = UID
    assert wiz.parse(pod).uid == UID
    container = responder.load("wiz_container_high")
    container["resource"]["pod"]["uid"] = UID.upper()
    assert wiz.parse(container).uid == UID
    snapshot = responder.load("wiz_entitysnapshot_resolved")
    assert wiz.parse(snapshot).uid == ""  # its `id` is a UUID, but Wiz's, not the pod's
    pod["resource"]["uid"] = "prod-eu/shop/web-7d9f8b6c5-x2k4p"
    with pytest.raises(findings.Malformed, match=r"resource\.uid .* is not a Kubernetes UID"):
        wiz.parse(pod)
