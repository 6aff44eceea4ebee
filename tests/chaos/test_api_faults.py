"""API faults: under each one (watch dropped mid-stream, 410 on resume, 500s, slow responses,
an API server restart with new resourceVersions) changes keep happening, including deletes,
and the agent converges to exactly what a freshly started agent computes from the final state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import probe, tables
from tests.support import live
from tests.support.polling import wait_for

FAULTS = ("drop_watch", "expire_410", "errors_500", "slow", "restart_new_rvs")


@pytest.fixture(scope="module")
def cluster() -> Iterator[sandbox_cluster.SandboxCluster]:
    with sandbox_cluster.SandboxCluster(nodes=("node-1",)) as cl:
        cl.ensure_namespace("f", {"ns": "f"})
        for name in ("a", "b", "c"):
            cl.add_pod("f", name, {"role": name})
        cl.start_agent("node-1")  # default resync (60 s): convergence must come from watches
        yield cl


def _deny_a(cluster: sandbox_cluster.SandboxCluster, name: str, allow: str) -> None:
    cluster.apply_policy(
        {
            "metadata": {"namespace": "f", "name": name},
            "spec": {
                "podSelector": {"matchLabels": {"role": "a"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": allow}}}]}],
            },
        }
    )


@pytest.mark.parametrize("fault", FAULTS)
def test_agent_converges_under_api_fault(
    cluster: sandbox_cluster.SandboxCluster, fault: str
) -> None:
    emulator = cluster.emulator
    agent = cluster.agents["node-1"]
    cluster.delete_all_policies()
    cluster.label_pod("f/b", {"role": "b"})
    _deny_a(cluster, "only-b", "b")  # will be deleted under the fault: must not be missed
    wait_for(lambda: tables.converged(cluster), timeout=20, what="baseline")
    pods = cluster.pods
    assert probe.probe(pods["f/c"], pods["f/a"].ipv4, 80, "tcp", 0.8) == probe.TIMEOUT
    errors = live.sample(agent, "podseg_api_errors_total", resource="networkpolicies") or 0
    relists = live.sample(agent, "podseg_watch_relists_total", resource="pods") or 0

    pod_b = cluster.api_client.sanitize_for_serialization(
        cluster.core.read_namespaced_pod("b", "f")
    )
    if fault == "drop_watch":
        emulator.drop_watches()
    elif fault == "expire_410":
        emulator.compact()
        emulator.drop_watches()
    elif fault == "errors_500":
        emulator.faults.error_status = 500
        emulator.drop_watches()
    elif fault == "slow":
        emulator.faults.latency = 0.5
        emulator.drop_watches()
    elif fault == "restart_new_rvs":
        emulator.restart()
    # Changes while the agent's view is broken: a delete, a new policy, a relabel.
    emulator.remove("networking.k8s.io/v1", "NetworkPolicy", "f", "only-b")
    emulator.insert(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"namespace": "f", "name": "only-c"},
            "spec": {
                "podSelector": {"matchLabels": {"role": "a"}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "c"}}}]}],
            },
        }
    )
    relabelled = dict(pod_b)
    relabelled["metadata"] = {**pod_b["metadata"], "labels": {"role": "x"}}
    emulator.insert(relabelled)
    if fault == "errors_500":
        wait_for(
            lambda: (
                (live.sample(agent, "podseg_api_errors_total", resource="networkpolicies") or 0)
                > errors
            ),
            what="the agent saw the 500s",
        )
        # Nothing opened during the outage: the old rules stay.
        assert probe.probe(pods["f/c"], pods["f/a"].ipv4, 80, "tcp", 0.8) == probe.TIMEOUT
        emulator.faults.reset()
    try:
        wait_for(
            lambda: tables.converged(cluster),
            timeout=30,
            what=f"convergence after {fault}: {tables.mismatches(cluster)}",
        )
    finally:
        emulator.faults.reset()
    assert probe.probe(pods["f/c"], pods["f/a"].ipv4, 80, "tcp", 0.8) == probe.OK
    assert probe.probe(pods["f/b"], pods["f/a"].ipv4, 80, "tcp", 0.8) == probe.TIMEOUT
    assert agent.running
    if fault in ("expire_410", "restart_new_rvs"):
        assert (live.sample(agent, "podseg_watch_relists_total", resource="pods") or 0) > relists
