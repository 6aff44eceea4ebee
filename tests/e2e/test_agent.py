"""The agent process under operational conditions: readiness, metrics, bad input, restarts,
API outages and vanishing namespaces, each checked with live probes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import probe
from tests.support.live import PODS, Env, sample
from tests.support.polling import wait_for


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with sandbox_cluster.SandboxCluster(nodes=("node-1",)) as cluster:
        cluster.ensure_namespace("t", {"ns": "t"})
        for name in PODS:
            cluster.add_pod("t", name, {"pod": name})
        # Repair at resync, the backstop: without the change watch, which repairs within
        # milliseconds (tests/e2e/test_tamper.py), a tamper stays visible until the resync.
        cluster.start_agent("node-1", ["--resync-period", "1", "--no-tamper-watch"])
        yield Env(cluster)


@pytest.fixture
def clean(env: Env) -> Iterator[Env]:
    env.cluster.delete_all_policies()
    env.cluster.emulator.emulator.faults.reset()
    env.wait_verdict("t/b", "t/a", probe.OK)
    yield env
    env.cluster.emulator.emulator.faults.reset()


def test_ready_and_metrics(clean: Env) -> None:
    agent = clean.agent
    assert agent.http("/readyz")[0] == 200
    assert agent.http("/healthz")[0] == 200
    assert sample(agent, "podseg_managed_pods", state="enforced") == len(PODS)
    before = sample(agent, "podseg_policy_programming_seconds_count", kind="policy") or 0
    clean.deny_a()
    clean.wait_verdict("t/b", "t/a", probe.TIMEOUT)
    after = sample(agent, "podseg_policy_programming_seconds_count", kind="policy")
    assert after is not None and after > before


def test_invalid_policy_keeps_valid_parts_and_reports(clean: Env) -> None:
    clean.cluster.emulator.insert(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"namespace": "t", "name": "half-broken"},
            "spec": {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {"ipBlock": {"cidr": "198.18.0.0/40"}},
                            {"podSelector": {"matchLabels": {"pod": "b"}}},
                        ]
                    }
                ],
            },
        }
    )
    clean.wait_verdict("t/c", "t/a", probe.TIMEOUT)  # the broken ipBlock did not open anything
    assert clean.verdict("t/b", "t/a") == probe.OK  # the valid peer is enforced
    wait_for(
        lambda: sample(clean.agent, "podseg_invalid_policies", namespace="t") == 1,
        what="invalid policy counted",
    )

    def warned() -> list[Any]:
        items = clean.cluster.core.list_namespaced_event("t").items
        return [e for e in items if e.reason == "InvalidPolicy"]

    event = wait_for(warned, what="InvalidPolicy event")[0]
    assert event.involved_object.name == "half-broken"
    assert "ipBlock" in event.message
    logged = clean.agent.events("policy_invalid_parts")
    assert any(e["policy"] == "half-broken" for e in logged)


def test_pod_without_namespace_is_unprotected_and_others_stay_enforced(clean: Env) -> None:
    core = clean.cluster.core
    core.create_namespaced_pod(
        "t",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "ghost", "namespace": "t", "labels": {"pod": "ghost"}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}]},
        },
    )
    core.patch_namespaced_pod_status(
        "ghost", "t", {"status": {"podIP": "198.18.120.1", "podIPs": [{"ip": "198.18.120.1"}]}}
    )
    try:
        wait_for(
            lambda: sample(clean.agent, "podseg_managed_pods", state="unprotected") == 1,
            what="ghost counted unprotected",
        )
        clean.deny_a()
        clean.wait_verdict("t/b", "t/a", probe.TIMEOUT)
        assert any(e.get("pod") == "ghost" for e in clean.agent.events("pod_not_enforced"))
    finally:
        core.delete_namespaced_pod("ghost", "t")
    wait_for(
        lambda: sample(clean.agent, "podseg_managed_pods", state="unprotected") == 0,
        what="ghost forgotten",
    )


def test_restart_keeps_rules_in_place_and_adopts_them(clean: Env) -> None:
    clean.deny_a()
    clean.wait_verdict("t/b", "t/a", probe.TIMEOUT)
    assert clean.agent.stop() == 0  # SIGTERM: clean exit
    assert clean.verdict("t/b", "t/a") == probe.TIMEOUT  # fail closed while it is gone
    assert clean.verdict("t/a", "t/b") == probe.OK
    clean.cluster.start_agent("node-1")
    adopted = {e["pod"] for e in clean.agent.events("ruleset_adopted")}
    applied = {e["pod"] for e in clean.agent.events("ruleset_applied")}
    assert adopted == set(PODS)
    assert applied == set()
    assert clean.verdict("t/b", "t/a") == probe.TIMEOUT


def test_api_outage_with_a_missed_delete_converges(clean: Env) -> None:
    emulator = clean.cluster.emulator
    clean.deny_a()
    clean.wait_verdict("t/b", "t/a", probe.TIMEOUT)
    errors_before = sample(clean.agent, "podseg_api_errors_total", resource="networkpolicies") or 0
    emulator.emulator.faults.error_status = 500
    emulator.drop_watches()
    # The delete happens while the agent cannot see the API: only a relist can reveal it.
    emulator.remove("networking.k8s.io/v1", "NetworkPolicy", "t", "deny-a")
    wait_for(
        lambda: (
            (sample(clean.agent, "podseg_api_errors_total", resource="networkpolicies") or 0)
            > errors_before
        ),
        what="agent saw the API errors",
    )
    assert clean.verdict("t/b", "t/a") == probe.TIMEOUT  # nothing opened during the outage
    assert clean.agent.running
    emulator.emulator.faults.reset()
    clean.wait_verdict("t/b", "t/a", probe.OK)


def test_vanished_namespace_is_not_a_crash(clean: Env) -> None:
    cluster = clean.cluster
    cluster.add_pod("t", "doomed", {"pod": "doomed"})
    wait_for(
        lambda: sample(clean.agent, "podseg_managed_pods", state="enforced") == len(PODS) + 1,
        what="doomed enforced",
    )
    cluster.sandbox.remove_pod(cluster.pods.pop("t/doomed"))  # netns gone, Pod object stays
    try:
        clean.deny_a()  # every local pod recompiles; t/a changes, t/doomed's namespace is gone
        clean.wait_verdict("t/b", "t/a", probe.TIMEOUT)
        assert clean.agent.running
        # The periodic resync reads every table back and notices the namespace is gone.
        wait_for(
            lambda: sample(clean.agent, "podseg_managed_pods", state="enforced") == len(PODS),
            what="doomed no longer counted enforced",
        )
        assert clean.agent.running
        assert sample(clean.agent, "podseg_managed_pods", state="unprotected") == 1
    finally:
        cluster.core.delete_namespaced_pod("doomed", "t")
    wait_for(
        lambda: sample(clean.agent, "podseg_managed_pods", state="unprotected") == 0,
        what="deleted pod forgotten",
    )


TAMPERS = {
    "table deleted": ["delete", "table", "inet", "podseg"],
    # Keeps our table and its fingerprint comment: only the kernel-listing digest sees it.
    "accept rule slipped in": ["insert", "rule", "inet", "podseg", "ingress_policy", "accept"],
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_tampered_table_is_restored_at_resync(clean: Env, tamper: str) -> None:
    clean.deny_a()
    clean.wait_verdict("t/b", "t/a", probe.TIMEOUT)
    drift = sample(clean.agent, "podseg_ruleset_drift_total") or 0
    netns = clean.cluster.pods["t/a"].netns
    subprocess.run(["ip", "netns", "exec", netns, "nft", *TAMPERS[tamper]], check=True)
    assert clean.verdict("t/b", "t/a") == probe.OK  # the tamper opened the pod...
    clean.wait_verdict("t/b", "t/a", probe.TIMEOUT)  # ...until the resync restored it
    assert (sample(clean.agent, "podseg_ruleset_drift_total") or 0) > drift
