"""The pure half of the responder: parsers per source, the severity scale, the decision and the
patch. No I/O: these run without root, an emulator or a network."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from agent.responder import falco, findings, generic, severity, wiz
from tests.responder import payloads

S = severity.Severity
NOW = datetime.datetime(2026, 11, 28, 23, 50, 1, 123456, tzinfo=datetime.UTC)


def test_falco_event_from_a_pod() -> None:
    f = falco.parse(payloads.load("falco_drop_and_execute"))
    assert (f.source, f.namespace, f.pod) == ("falco", "shop", "web-7d9f8b6c5-x2k4p")
    assert f.severity is S.CRITICAL
    assert f.rule == "Drop and execute new binary in container"
    assert f.reporter == "falco-7xk2q" and f.names_pod
    assert "kworkerd" in f.summary


def test_falcosidekick_event_carries_its_uuid() -> None:
    f = falco.parse(payloads.load("falcosidekick_reverse_shell"))
    assert (f.namespace, f.pod) == ("payments", "api-5b6c7d8f9-qr7tz")
    assert f.finding_id == "0c7f3b8e-5a41-4d2e-9b6f-2f0e8a9c1d37"
    assert f.severity is S.CRITICAL


def test_falco_host_event_names_no_pod_and_is_ignored_whatever_its_priority() -> None:
    f = falco.parse(payloads.load("falco_host_event"))
    assert not f.names_pod and f.pod == "" and f.namespace == ""
    verdict = findings.decide(f, findings.Policy(min_severity=S.DEBUG))
    assert not verdict.act and "host" in verdict.why


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"output_fields": ["k8s.pod.name"]}, "output_fields must be a JSON object"),
        ({"priority": 5}, "unknown severity '5'"),
        ({"priority": "Severe"}, "unknown severity 'Severe'"),
        ({"rule": {"name": "x"}}, "rule must be a string"),
        ({"output_fields": {"k8s.pod.name": ["a"]}}, "k8s.pod.name"),
    ],
)
def test_falco_wrong_types_are_malformed(change: dict[str, Any], message: str) -> None:
    body = payloads.load("falco_drop_and_execute") | change
    with pytest.raises(findings.Malformed, match=message):
        falco.parse(body)


@pytest.mark.parametrize("payload", [[], "text", 3, None])
def test_a_body_that_is_not_an_object_is_malformed(payload: Any) -> None:
    for parse in (falco.parse, wiz.parse, generic.parse):
        if payload is None:
            assert not parse(payload).names_pod  # JSON null: an empty finding, ignored
            continue
        with pytest.raises(findings.Malformed, match="must be a JSON object"):
            parse(payload)


def test_wiz_issue_about_a_pod() -> None:
    f = wiz.parse(payloads.load("wiz_pod_critical"))
    assert (f.source, f.namespace, f.pod) == ("wiz", "shop", "web-7d9f8b6c5-x2k4p")
    assert f.severity is S.CRITICAL
    assert f.rule == "Cryptominer process executed in a publicly exposed pod"
    assert f.finding_id == "b8e41f07-2c9a-4d63-a1f5-77e0c3d9a2b4"
    assert f.reporter == "Contain critical runtime issues on prod-eu"


def test_wiz_issue_about_a_container_names_its_pod_and_high_maps_to_error() -> None:
    f = wiz.parse(payloads.load("wiz_container_high"))
    assert (f.namespace, f.pod) == ("payments", "api-5b6c7d8f9-qr7tz")
    assert f.severity is S.ERROR
    assert findings.decide(f, findings.Policy(min_severity=S.ERROR)).act
    assert not findings.decide(f, findings.Policy(min_severity=S.CRITICAL)).act


def test_wiz_resolved_issue_and_entity_snapshot_variant() -> None:
    f = wiz.parse(payloads.load("wiz_entitysnapshot_resolved"))
    assert (f.namespace, f.pod) == ("shop", "web-7d9f8b6c5-x2k4p")  # read from entitySnapshot
    assert f.rule == "Cryptominer process executed in a publicly exposed pod"  # issue.control
    verdict = findings.decide(f, findings.Policy())
    assert not verdict.act and "RESOLVED" in verdict.why


def test_wiz_issue_about_a_vm_is_not_about_a_pod() -> None:
    verdict = findings.decide(wiz.parse(payloads.load("wiz_vm")), findings.Policy())
    assert not verdict.act and "virtualMachine, not a pod" in verdict.why


def test_wiz_pod_without_namespace_says_how_to_fix_the_template() -> None:
    body = payloads.load("wiz_pod_critical")
    del body["resource"]["kubernetesNamespaceName"]
    verdict = findings.decide(wiz.parse(body), findings.Policy())
    assert not verdict.act and "kubernetesNamespaceName" in verdict.why


def test_wiz_severity_falls_back_to_the_control() -> None:
    body = payloads.load("wiz_pod_critical")
    del body["issue"]["severity"]
    body["control"]["severity"] = "MEDIUM"
    assert wiz.parse(body).severity is S.WARNING


def test_generic_finding() -> None:
    f = generic.parse(payloads.load("generic_critical"))
    assert (f.namespace, f.pod, f.severity, f.rule) == (
        "shop",
        "web-7d9f8b6c5-x2k4p",
        S.CRITICAL,
        "c2-beacon",
    )
    assert f.reporter == "acme-edr" and f.finding_id == "edr-2026-11-28-000417"
    assert generic.parse({"namespace": "a", "pod": "b", "severity": "HIGH"}).severity is S.ERROR


def test_the_scale_orders_both_vocabularies() -> None:
    falco_order = [severity.FALCO[w] for w in ("debug", "informational", "notice", "warning")]
    falco_order += [severity.FALCO[w] for w in ("error", "critical", "alert", "emergency")]
    assert falco_order == sorted(falco_order) and len(set(falco_order)) == 8
    wiz_order = [severity.WIZ[w] for w in ("informational", "low", "medium", "high", "critical")]
    assert wiz_order == sorted(wiz_order) and len(set(wiz_order)) == 5
    assert severity.WIZ["critical"] == severity.FALCO["critical"]
    assert severity.threshold("none") is None
    assert severity.threshold("HIGH") is S.ERROR
    with pytest.raises(severity.UnknownSeverity):
        severity.threshold("urgent")


def _finding(**kw: Any) -> findings.Finding:
    return findings.Finding(**({"source": "generic", "namespace": "ns", "pod": "p"} | kw))


@pytest.mark.parametrize(
    ("finding", "policy", "act", "why"),
    [
        (_finding(severity=S.CRITICAL), findings.Policy(), True, "at or above critical"),
        (_finding(severity=S.EMERGENCY), findings.Policy(), True, "at or above"),
        (_finding(severity=S.ERROR), findings.Policy(), False, "error is below the threshold"),
        (_finding(), findings.Policy(), False, "no severity"),
        (
            _finding(severity=S.NOTICE, rule="Terminal shell in container"),
            findings.Policy(rules=frozenset({"Terminal shell in container"})),
            True,
            "on the allow-list",
        ),
        (
            _finding(severity=S.EMERGENCY, rule="other"),
            findings.Policy(min_severity=None, rules=frozenset({"x"})),
            False,
            "not on the allow-list",
        ),
        (_finding(pod="", severity=S.EMERGENCY), findings.Policy(), False, "names no pod"),
    ],
)
def test_decide(finding: findings.Finding, policy: findings.Policy, act: bool, why: str) -> None:
    verdict = findings.decide(finding, policy)
    assert verdict.act is act and why in verdict.why


@pytest.mark.parametrize(
    ("namespace", "pod", "bad"),
    [
        ("shop", "web-7d9f8b6c5-x2k4p", ""),
        ("shop", "db-0.primary", ""),
        ("Shop", "web", "namespace"),
        ("shop", "../../nodes/x", "pod"),
        ("shop", "web/exec", "pod"),
        ("a" * 64, "web", "namespace"),
        ("shop", "w" * 254, "pod"),
    ],
)
def test_pod_names_are_checked_before_any_api_call(namespace: str, pod: str, bad: str) -> None:
    message = findings.invalid_name(_finding(namespace=namespace, pod=pod))
    assert (message.split(" ")[0] if message else "") == bad


def test_quarantine_patch_sets_label_annotations_and_the_read_resource_version() -> None:
    f = falco.parse(payloads.load("falco_drop_and_execute"))
    patch = findings.quarantine_patch(f, NOW, "4711")
    meta = patch["metadata"]
    assert meta["resourceVersion"] == "4711"
    assert meta["labels"] == {"podseg.io/quarantine": "true"}
    notes = meta["annotations"]
    assert notes["podseg.io/quarantined-by"] == "podseg-responder/falco (falco-7xk2q)"
    assert notes["podseg.io/quarantined-at"] == "2026-11-28T23:50:01.123456Z"
    reason = notes["podseg.io/quarantine-reason"]
    assert reason.startswith(
        "falco rule 'Drop and execute new binary in container' (critical): 23:41:07"
    )
    assert len(reason) <= findings.REASON_MAX


def test_reason_is_one_trimmed_line() -> None:
    f = _finding(rule="r", summary="line one\nline\ttwo\x00" + "x" * 2000, severity=S.ALERT)
    reason = findings.reason(f)
    assert len(reason) == findings.REASON_MAX and reason.endswith("\u2026")
    assert reason.startswith("generic rule 'r' (alert): line one line two ")
    assert all(c.isprintable() for c in reason)


def test_the_label_values_the_agent_reads_as_quarantined() -> None:
    for value in ("true", "True", " yes", "1", "on"):
        assert findings.is_quarantined({"podseg.io/quarantine": value}), value
    for value in ("false", "off", "", "truthy"):
        assert not findings.is_quarantined({"podseg.io/quarantine": value}), value
    assert not findings.is_quarantined(None)
