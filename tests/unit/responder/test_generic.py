"""The generic finding format: namespace, pod, severity in either vocabulary, rule and summary."""

from __future__ import annotations

from agent.responder import generic, severity
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
