"""Findings, pure: a body that is not a JSON object is malformed for every parser, the decision
to act, pod names checked before any API call, the quarantine patch and its reason, and the
label values the agent reads as quarantined."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from agent.responder import falco, findings, generic, severity, wiz
from tests.support import responder

S = severity.Severity
NOW = datetime.datetime(2026, 11, 28, 23, 50, 1, 123456, tzinfo=datetime.UTC)
UID = "3f6d2a1c-8b7e-4c59-9d0a-1e2f3a4b5c6d"


@pytest.mark.parametrize("payload", [[], "text", 3, None])
def test_a_body_that_is_not_an_object_is_malformed(payload: Any) -> None:
    for parse in (falco.parse, wiz.parse, generic.parse):
        if payload is None:
            assert not parse(payload).names_pod  # JSON null: an empty finding, ignored
            continue
        with pytest.raises(findings.Malformed, match="must be a JSON object"):
            parse(payload)


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
    f = falco.parse(responder.load("falco_drop_and_execute"))
    patch = findings.quarantine_patch(f, NOW, "4711", UID)
    meta = patch["metadata"]
    assert meta["resourceVersion"] == "4711" and meta["uid"] == UID
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
