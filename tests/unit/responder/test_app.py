"""The running responder against the API emulator, through the real `kubernetes` client: every
answer of the webhook contract, and what it did (or did not do) to the pod in the API."""

from __future__ import annotations

import datetime
from typing import Any

import kubernetes.client

from testbed.emulator import server
from tests.support import apiclient
from tests.support import responder as harness
from tests.support.responder import PAYMENTS_API, SHOP_WEB, TOKEN, Start, count, pod_meta

LABEL = "podseg.io/quarantine"


def test_falco_critical_finding_quarantines_the_named_pod(
    core: kubernetes.client.CoreV1Api, start_responder: Start
) -> None:
    responder = start_responder()
    before = count("falco", "quarantined")
    status, body = responder.post("falco", harness.load("falco_drop_and_execute"))
    assert status == 200, body
    assert body["outcome"] == "quarantined"
    assert (body["namespace"], body["pod"]) == SHOP_WEB
    meta = pod_meta(core, SHOP_WEB)
    assert meta.labels[LABEL] == "true"
    assert meta.labels["app"] == "web"  # a merge patch: the other labels stay
    notes = meta.annotations
    assert notes["podseg.io/quarantined-by"] == "podseg-responder/falco (falco-7xk2q)"
    assert notes["podseg.io/quarantine-reason"].startswith(
        "falco rule 'Drop and execute new binary in container' (critical): "
    )
    stamp = datetime.datetime.fromisoformat(notes["podseg.io/quarantined-at"])
    assert abs(stamp - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(minutes=1)
    assert LABEL not in (pod_meta(core, PAYMENTS_API).labels or {})  # only the named pod
    assert count("falco", "quarantined") == before + 1


def test_missing_or_wrong_token_is_401_and_changes_nothing(
    core: kubernetes.client.CoreV1Api, emulator: server.EmulatorThread, start_responder: Start
) -> None:
    responder = start_responder()
    rv = emulator.resource_version
    before = count("falco", "unauthorized")
    body = harness.load("falco_drop_and_execute")
    for token in (None, "wrong", TOKEN[:-1], TOKEN + "x", ""):
        status, answer = responder.post("falco", body, token=token)
        assert status == 401, (token, answer)
        assert answer["outcome"] == "unauthorized"
    for header in (f"Basic {TOKEN}", TOKEN, f"Bearer{TOKEN}"):
        status, headers, _ = responder.request(
            "POST", "/findings/falco", b"{}", {"Authorization": header}
        )
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert emulator.resource_version == rv
    assert LABEL not in (pod_meta(core, SHOP_WEB).labels or {})
    assert count("falco", "unauthorized") == before + 8


def test_malformed_bodies_are_400_with_a_clear_message(
    core: kubernetes.client.CoreV1Api, emulator: server.EmulatorThread, start_responder: Start
) -> None:
    responder = start_responder()
    rv = emulator.resource_version
    cases: list[tuple[str, bytes, str]] = [
        ("falco", b'{"rule": "x", ', "not JSON"),
        ("falco", b"\xff\xfe", "not UTF-8"),
        ("wiz", b"[1, 2]", "must be a JSON object"),
        ("falco", b'{"priority": "Severe", "output_fields": {}}', "unknown severity 'Severe'"),
        ("generic", b'{"namespace": "shop", "pod": {"name": "x"}}', "pod must be a string"),
        ("generic", b'{"namespace": "shop", "pod": "../x", "severity": "critical"}', "not a valid"),
        ("generic", b'{"namespace": "shop", "pod": "web\\ud800"}', "pod is not valid Unicode"),
        ("generic", b"[" * 40 + b"]" * 40, "nested deeper than 32 levels"),
        ("wiz", b'{"issue": {"severity": "HIGH"}, "control": []}', "control must be a JSON"),
    ]
    for source, raw, message in cases:
        status, answer = responder.post(source, None, raw=raw)
        assert status == 400, (raw, answer)
        assert answer["outcome"] == "malformed" and message in answer["message"], answer
    assert emulator.resource_version == rv


def test_unknown_pod_is_404_and_changes_nothing(
    core: kubernetes.client.CoreV1Api, emulator: server.EmulatorThread, start_responder: Start
) -> None:
    responder = start_responder()
    rv = emulator.resource_version
    body = harness.load("generic_critical") | {"pod": "web-gone-12345"}
    status, answer = responder.post("generic", body)
    assert status == 404 and answer["outcome"] == "unknown-pod"
    assert "shop/web-gone-12345" in answer["message"]
    assert emulator.resource_version == rv


def test_below_threshold_or_no_pod_is_202_ignored_with_why(
    core: kubernetes.client.CoreV1Api, emulator: server.EmulatorThread, start_responder: Start
) -> None:
    responder = start_responder(min_severity="critical")
    rv = emulator.resource_version
    status, answer = responder.post("falco", harness.load("falco_terminal_shell"))
    assert status == 202 and answer["outcome"] == "ignored"
    assert "notice is below the threshold critical" in answer["message"]
    status, answer = responder.post("falco", harness.load("falco_host_event"))
    assert status == 202 and "names no pod" in answer["message"]
    status, answer = responder.post("wiz", harness.load("wiz_vm"))
    assert status == 202 and "not a pod" in answer["message"]
    assert emulator.resource_version == rv


def test_a_lower_threshold_or_an_allow_listed_rule_acts(
    core: kubernetes.client.CoreV1Api, start_responder: Start
) -> None:
    responder = start_responder(
        min_severity="none", rules=frozenset({"Terminal shell in container"})
    )
    status, answer = responder.post("falco", harness.load("falcosidekick_reverse_shell"))
    assert status == 202 and "not on the allow-list" in answer["message"]  # critical, but off
    status, answer = responder.post("falco", harness.load("falco_terminal_shell"))
    assert status == 200 and answer["outcome"] == "quarantined"
    assert "on the allow-list" in answer["message"]
    assert pod_meta(core, SHOP_WEB).labels[LABEL] == "true"


def test_repeated_findings_make_one_change(
    core: kubernetes.client.CoreV1Api, emulator: server.EmulatorThread, start_responder: Start
) -> None:
    responder = start_responder()
    body = harness.load("falco_drop_and_execute")
    rv = emulator.resource_version
    status, first = responder.post("falco", body)
    assert status == 200 and first["outcome"] == "quarantined"
    after_first = pod_meta(core, SHOP_WEB)
    for _ in range(3):
        status, again = responder.post("falco", body)
        assert status == 200 and again["outcome"] == "unchanged", again
        assert "already quarantined" in again["message"]
    after = pod_meta(core, SHOP_WEB)
    # One write in the whole API (the global resourceVersion moved once), and the annotations
    # (whose timestamp has microseconds, so a second patch could not be a no-op) are the first.
    assert emulator.resource_version == rv + 1
    assert after.resource_version == after_first.resource_version
    assert after.annotations == after_first.annotations


def test_concurrent_identical_findings_make_one_change(
    core: kubernetes.client.CoreV1Api, emulator: server.EmulatorThread, start_responder: Start
) -> None:
    responder = start_responder()
    rv = emulator.resource_version
    answers = responder.post_many("wiz", harness.load("wiz_pod_critical"), 8)
    outcomes = sorted(a["outcome"] for _, a in answers)
    assert outcomes == ["quarantined"] + ["unchanged"] * 7, answers
    assert {s for s, _ in answers} == {200}
    assert emulator.resource_version == rv + 1


def _changing_clock(core: kubernetes.client.CoreV1Api, change: dict[str, Any]) -> Any:
    """A clock for the patcher that, the first time it is read (between the responder's read
    of the pod and its patch), changes the pod through the API: a deterministic race."""
    calls = {"n": 0}

    def clock() -> datetime.datetime:
        calls["n"] += 1
        if calls["n"] == 1:
            core.patch_namespaced_pod(SHOP_WEB[1], SHOP_WEB[0], {"metadata": change})
        return datetime.datetime.now(datetime.UTC)

    return clock


def test_a_pod_changed_between_read_and_patch_is_read_again(
    core: kubernetes.client.CoreV1Api, emulator: server.EmulatorThread, start_responder: Start
) -> None:
    responder = start_responder(clock=_changing_clock(core, {"labels": {"tier": "front"}}))
    status, answer = responder.post("generic", harness.load("generic_critical"))
    assert status == 200 and answer["outcome"] == "quarantined"
    labels = pod_meta(core, SHOP_WEB).labels
    assert labels[LABEL] == "true" and labels["tier"] == "front"  # the other writer's change kept


def test_a_pod_quarantined_by_another_replica_meanwhile_is_unchanged(
    core: kubernetes.client.CoreV1Api, emulator: server.EmulatorThread, start_responder: Start
) -> None:
    responder = start_responder(clock=_changing_clock(core, {"labels": {LABEL: "true"}}))
    rv = emulator.resource_version
    status, answer = responder.post("generic", harness.load("generic_critical"))
    assert status == 200 and answer["outcome"] == "unchanged"
    assert emulator.resource_version == rv + 1  # only the other writer's change
    assert "podseg.io/quarantined-by" not in (pod_meta(core, SHOP_WEB).annotations or {})


def test_dry_run_changes_nothing_and_says_what_it_would_do(
    core: kubernetes.client.CoreV1Api, emulator: server.EmulatorThread, start_responder: Start
) -> None:
    responder = start_responder(dry_run=True)
    rv = emulator.resource_version
    before = count("falco", "dry_run")
    status, answer = responder.post("falco", harness.load("falcosidekick_reverse_shell"))
    assert status == 200 and answer["outcome"] == "dry-run"
    assert (
        "would set podseg.io/quarantine=true on payments/api-5b6c7d8f9-qr7tz" in (answer["message"])
    )
    assert answer["would_patch"]["metadata"]["labels"] == {LABEL: "true"}
    assert emulator.resource_version == rv
    assert LABEL not in (pod_meta(core, PAYMENTS_API).labels or {})
    assert count("falco", "dry_run") == before + 1
    # Dry run still reads the pod, so it reports an unknown pod truthfully.
    status, answer = responder.post("generic", harness.load("generic_critical") | {"pod": "nope"})
    assert status == 404


def test_wiz_container_finding_quarantines_its_pod_at_threshold_high(
    core: kubernetes.client.CoreV1Api, start_responder: Start
) -> None:
    responder = start_responder(min_severity="high")
    status, answer = responder.post("wiz", harness.load("wiz_container_high"))
    assert status == 200 and answer["outcome"] == "quarantined", answer
    meta = pod_meta(core, PAYMENTS_API)
    assert meta.labels[LABEL] == "true"
    assert meta.annotations["podseg.io/quarantined-by"] == (
        "podseg-responder/wiz (Runtime issues to podseg)"
    )
    assert (
        "Reverse shell opened from a container" in meta.annotations["podseg.io/quarantine-reason"]
    )
    status, answer = responder.post("wiz", harness.load("wiz_entitysnapshot_resolved"))
    assert status == 202 and "RESOLVED" in answer["message"]


def test_generic_finding_quarantines(
    core: kubernetes.client.CoreV1Api, start_responder: Start
) -> None:
    responder = start_responder()
    status, answer = responder.post("generic", harness.load("generic_critical"))
    assert status == 200 and answer["outcome"] == "quarantined"
    meta = pod_meta(core, SHOP_WEB)
    assert meta.annotations["podseg.io/quarantined-by"] == "podseg-responder/generic (acme-edr)"
    assert meta.annotations["podseg.io/quarantine-reason"] == (
        "generic rule 'c2-beacon' (critical): EDR: outbound connection to a known "
        "command-and-control host 203.0.113.9:443"
    )


def test_api_failure_is_502_and_changes_nothing(
    core: kubernetes.client.CoreV1Api, emulator: server.EmulatorThread, start_responder: Start
) -> None:
    responder = start_responder()
    emulator.emulator.call(setattr, emulator.faults, "error_status", 503)
    try:
        status, answer = responder.post("falco", harness.load("falco_drop_and_execute"))
    finally:
        emulator.emulator.call(emulator.faults.reset)
    assert status == 502 and answer["outcome"] == "error"
    assert "nothing changed" in answer["message"] and "HTTP 503" in answer["message"]
    assert LABEL not in (pod_meta(core, SHOP_WEB).labels or {})
    status, answer = responder.post("falco", harness.load("falco_drop_and_execute"))
    assert status == 200 and answer["outcome"] == "quarantined"  # the sender's retry works


def test_a_rotated_token_takes_effect_without_restart(
    core: kubernetes.client.CoreV1Api, start_responder: Start, tmp_path: Any
) -> None:
    responder = start_responder()
    body = harness.load("falco_terminal_shell")
    assert responder.post("falco", body)[0] == 202
    token_file = tmp_path / "token"
    token_file.write_text("rotated-token-value-1234\n")
    assert responder.post("falco", body)[0] == 401
    assert responder.post("falco", body, token="rotated-token-value-1234")[0] == 202


def test_health_metrics_and_unknown_source(start_responder: Start) -> None:
    responder = start_responder()
    status, _, text = responder.request("GET", "/healthz")
    assert status == 200 and text == b"ok\n"
    status, answer = responder.post("splunk", {})
    assert status == 404 and answer["outcome"] == "unknown-source"
    status, _, text = responder.request("GET", "/metrics")
    assert status == 200
    assert b'podseg_responder_findings_total{outcome="unknown_source",source="unknown"}' in text
    assert b"podseg_managed_pods" not in text  # the agent's series are not the responder's


def test_a_finding_in_a_protected_namespace_is_403_and_never_patched(
    core: kubernetes.client.CoreV1Api, emulator: server.EmulatorThread, start_responder: Start
) -> None:
    core.create_namespaced_pod("kube-system", apiclient.pod("coredns-5d78c9869d-q8xkz", {}))
    body = harness.load("generic_critical") | {
        "namespace": "kube-system",
        "pod": "coredns-5d78c9869d-q8xkz",
    }
    rv = emulator.resource_version
    before = count("generic", "protected")
    for dry_run in (False, True):
        responder = start_responder(dry_run=dry_run)
        with harness.audit() as audit:
            status, answer = responder.post("generic", body)
        assert status == 403 and answer["outcome"] == "protected", answer
        assert "namespace kube-system is protected" in answer["message"]
        assert "nothing changed" in answer["message"]
        (line,) = audit.decisions()
        assert (line["outcome"], line["status"], line["namespace"]) == (
            "protected",
            403,
            "kube-system",
        )
    assert emulator.resource_version == rv
    labels = core.read_namespaced_pod("coredns-5d78c9869d-q8xkz", "kube-system").metadata.labels
    assert LABEL not in (labels or {})
    assert count("generic", "protected") == before + 2
    # podseg's own namespace is protected by default too (the pod need not exist: no API call).
    status, answer = responder.post("generic", body | {"namespace": "podseg-system"})
    assert status == 403 and answer["outcome"] == "protected"


def test_the_protected_namespaces_are_configurable(
    core: kubernetes.client.CoreV1Api, start_responder: Start
) -> None:
    responder = start_responder(protected_namespaces=frozenset({"shop"}))
    status, answer = responder.post("generic", harness.load("generic_critical"))
    assert status == 403 and "namespace shop is protected" in answer["message"]
    assert LABEL not in (pod_meta(core, SHOP_WEB).labels or {})
    status, answer = responder.post("falco", harness.load("falcosidekick_reverse_shell"))
    assert status == 200 and answer["outcome"] == "quarantined"  # payments: not protected


OTHER_UID = "0b9e8d7c-6f5a-4e3d-8c2b-1a0f9e8d7c6b"


def test_a_finding_about_the_live_pods_uid_quarantines_it(
    core: kubernetes.client.CoreV1Api, start_responder: Start
) -> None:
    responder = start_responder()
    uid = pod_meta(core, SHOP_WEB).uid
    with harness.audit() as audit:
        status, answer = responder.post("generic", harness.load("generic_critical") | {"uid": uid})
    assert status == 200 and answer["outcome"] == "quarantined", answer
    (line,) = audit.decisions()
    assert line["finding_uid"] == line["pod_uid"] == uid
    assert pod_meta(core, SHOP_WEB).labels[LABEL] == "true"


def test_a_finding_about_another_uid_is_409_and_changes_nothing(
    core: kubernetes.client.CoreV1Api, emulator: server.EmulatorThread, start_responder: Start
) -> None:
    """The pod of that name is a successor (another UID): the finding is not about it."""
    responder = start_responder()
    rv = emulator.resource_version
    live = pod_meta(core, PAYMENTS_API).uid
    before = count("falco", "replaced")
    body = harness.load("falcosidekick_reverse_shell")
    body["output_fields"]["k8s.pod.uid"] = OTHER_UID.upper()  # any case
    with harness.audit() as audit:
        status, answer = responder.post("falco", body)
    assert status == 409 and answer["outcome"] == "replaced", answer
    assert f"is now pod UID {live}" in answer["message"] and OTHER_UID in answer["message"]
    assert "nothing changed" in answer["message"]
    (line,) = audit.decisions()
    assert (line["finding_uid"], line["pod_uid"], line["status"]) == (OTHER_UID, live, 409)
    assert emulator.resource_version == rv
    assert LABEL not in (pod_meta(core, PAYMENTS_API).labels or {})
    assert count("falco", "replaced") == before + 1


def _replacing_clock(core: kubernetes.client.CoreV1Api) -> Any:
    """A clock for the patcher that, read between the responder's read of the pod and its
    patch, deletes the pod and creates a same-named successor: a deterministic race."""
    calls = {"n": 0}

    def clock() -> datetime.datetime:
        calls["n"] += 1
        if calls["n"] == 1:
            core.delete_namespaced_pod(SHOP_WEB[1], SHOP_WEB[0], grace_period_seconds=0)
            core.create_namespaced_pod(SHOP_WEB[0], apiclient.pod(SHOP_WEB[1], {"app": "web"}))
        return datetime.datetime.now(datetime.UTC)

    return clock


def test_a_pod_replaced_between_read_and_patch_is_refused_by_the_api_and_409(
    core: kubernetes.client.CoreV1Api, start_responder: Start
) -> None:
    """The patch carries the UID and resourceVersion read: the API server refuses it for the
    successor, and the responder, reading again, sees another UID: 409, the successor is
    untouched. With or without a UID in the finding (without one, the pod first read is the
    one the finding is about)."""
    for with_uid in (True, False):
        original = pod_meta(core, SHOP_WEB).uid
        responder = start_responder(clock=_replacing_clock(core))
        body = harness.load("generic_critical") | ({"uid": original} if with_uid else {})
        status, answer = responder.post("generic", body)
        successor = pod_meta(core, SHOP_WEB)
        assert successor.uid != original
        assert status == 409 and answer["outcome"] == "replaced", (with_uid, answer)
        assert f"is now pod UID {successor.uid}" in answer["message"]
        assert LABEL not in (successor.labels or {})
        assert "podseg.io/quarantined-by" not in (successor.annotations or {})


def test_the_patch_carries_the_uid_and_resource_version_read(
    core: kubernetes.client.CoreV1Api, start_responder: Start
) -> None:
    responder = start_responder(dry_run=True)
    meta = pod_meta(core, SHOP_WEB)
    status, answer = responder.post("generic", harness.load("generic_critical"))
    assert status == 200 and answer["outcome"] == "dry-run"
    assert answer["would_patch"]["metadata"]["uid"] == meta.uid
    assert answer["would_patch"]["metadata"]["resourceVersion"] == meta.resource_version


def test_a_client_over_its_rate_is_429_with_retry_after_and_counted(
    core: kubernetes.client.CoreV1Api, emulator: server.EmulatorThread, start_responder: Start
) -> None:
    """Per client address: 127.0.0.2 is limited, 127.0.0.3 is not. Refused requests are counted
    in the metric; their audit lines are at most one a second per client."""
    responder = start_responder(rate_limit=0.5, rate_burst=3)
    body = harness.load("generic_critical")
    before = count("generic", "rate_limited")
    with harness.audit() as audit:
        answers = [responder.post_full("generic", body, client="127.0.0.2") for _ in range(6)]
        assert [status for status, _, _ in answers] == [200, 200, 200, 429, 429, 429]
        status, headers, answer = answers[3]
        assert answer["outcome"] == "rate-limited", answer
        assert "at most 0.5 a second (bursts of 3)" in answer["message"]
        assert 1 <= int(headers["Retry-After"]) <= 2
        status, answer = responder.post("generic", body, client="127.0.0.3")
        assert status == 200 and answer["outcome"] == "unchanged"
        # Without a token too: the limit comes first, so a flood never reaches the token check.
        status, answer = responder.post("generic", body, client="127.0.0.2", token="wrong")
        assert status == 429
        limited = [line for line in audit.decisions() if line["outcome"] == "rate_limited"]
    assert count("generic", "rate_limited") == before + 4
    assert len(limited) == 1 and limited[0]["remote"] == "127.0.0.2"
    assert limited[0]["status"] == 429
