"""Falco and falcosidekick events parsed into findings: the pod named by its output fields, a
host event naming no pod, wrong field types reported as malformed."""

from __future__ import annotations

from typing import Any

import pytest

from agent.responder import falco, findings, severity
from tests.support import responder

S = severity.Severity


def test_falco_event_from_a_pod() -> None:
    f = falco.parse(responder.load("falco_drop_and_execute"))
    assert (f.source, f.namespace, f.pod) == ("falco", "shop", "web-7d9f8b6c5-x2k4p")
    assert f.severity is S.CRITICAL
    assert f.rule == "Drop and execute new binary in container"
    assert f.reporter == "falco-7xk2q" and f.names_pod
    assert "kworkerd" in f.summary


def test_falcosidekick_event_carries_its_uuid() -> None:
    f = falco.parse(responder.load("falcosidekick_reverse_shell"))
    assert (f.namespace, f.pod) == ("payments", "api-5b6c7d8f9-qr7tz")
    assert f.finding_id == "0c7f3b8e-5a41-4d2e-9b6f-2f0e8a9c1d37"
    assert f.severity is S.CRITICAL


def test_falco_host_event_names_no_pod_and_is_ignored_whatever_its_priority() -> None:
    f = falco.parse(responder.load("falco_host_event"))
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
    body = responder.load("falco_drop_and_execute") | change
    with pytest.raises(findings.Malformed, match=message):
        falco.parse(body)


UID = "5c1f0e2d-9a8b-4c7d-8e6f-0a1b2c3d4e5f"


def test_falco_pod_uid_is_read_from_the_output_fields() -> None:
    body = responder.load("falco_drop_and_execute")
    assert falco.parse(body).uid == ""
    for field in ("k8s.pod.uid", "k8smeta.pod.uid"):
        changed = {**body, "output_fields": {**body["output_fields"], field: UID.upper()}}
        assert falco.parse(changed).uid == UID
    absent = {**body, "output_fields": {**body["output_fields"], "k8s.pod.uid": "<NA>"}}
    assert falco.parse(absent).uid == ""
    bad = {**body, "output_fields": {**body["output_fields"], "k8s.pod.uid": "web-1"}}
    with pytest.raises(findings.Malformed, match="is not a Kubernetes UID"):
        falco.parse(bad)
