"""The generic finding format: namespace, pod, severity in either vocabulary, rule and summary."""

from __future__ import annotations

import pytest

from agent.responder import findings, generic, severity
from tests.support import responder

S = severity.Severity


def test_generic_finding() -> None:
    f = generic.parse(responder.load("generic_critical"))
    assert (f.namespace, f.pod, f.severity, f.rule) == (
        "shop",
        "web-7d9f8b6c5-x2k4p",
        S.CRITICAL,
        "c2-beacon",
    )
    assert f.reporter == "acme-edr" and f.finding_id == "edr-2026-11-28-000417"
    assert generic.parse({"namespace": "a", "pod": "b", "severity": "HIGH"}).severity is S.ERROR


def test_generic_uid_is_optional_and_must_be_a_kubernetes_uid() -> None:
    body = responder.load("generic_critical")
    assert generic.parse(body).uid == ""
    uid = "5C1F0E2D-9A8B-4C7D-8E6F-0A1B2C3D4E5F"
    assert generic.parse(body | {"uid": uid}).uid == uid.lower()
    for bad in ("web-7d9f8b6c5-x2k4p", "5c1f0e2d9a8b4c7d8e6f0a1b2c3d4e5f", 12):
        with pytest.raises(findings.Malformed, match=r"uid .* is not a Kubernetes UID"):
            generic.parse(body | {"uid": bad})
