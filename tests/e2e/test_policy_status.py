"""Policy status with one writer, on the emulator with two node agents: exactly one
InvalidPolicy / NoPodsSelected Event per policy (not one per node), node reports that say
where each policy is programmed (`podseg policies`), and a new writer when the leader dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.sandbox import cluster as sandbox_cluster
from tests.support.polling import wait_for

NS = "ps"
NODES = ("node-1", "node-2")
LEASE_SECONDS = 2


class Env:
    def __init__(self, cluster: sandbox_cluster.SandboxCluster) -> None:
        self.cluster = cluster

    def events(self, reason: str, name: str | None = None) -> list[Any]:
        items = self.cluster.core.list_namespaced_event(NS).items
        return [
            e
            for e in items
            if e.reason == reason and (name is None or e.involved_object.name == name)
        ]

    def leaders(self) -> list[str]:
        out = []
        for node, agent in self.cluster.agents.items():
            if not agent.running:
                continue
            status, text = agent.http("/metrics")
            if status == 200 and "\npodseg_policy_status_leader 1.0" in text:
                out.append(node)
        return out

    def policy(self, name: str, spec: dict[str, Any]) -> None:
        self.cluster.emulator.insert(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"namespace": NS, "name": name},
                "spec": {"policyTypes": ["Ingress"], **spec},
            }
        )

    def policies_cli(self) -> tuple[int, list[dict[str, Any]]]:
        done = subprocess.run(
            [sys.executable, "-m", "agent", "policies", "-o", "json"],
            env={**os.environ, "KUBECONFIG": self.cluster.kubeconfig},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode in (0, 1), done.stderr
        return done.returncode, json.loads(done.stdout)

    def status_of(self, name: str) -> dict[str, Any]:
        return next(r for r in self.policies_cli()[1] if r["name"] == name)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with sandbox_cluster.SandboxCluster(nodes=NODES) as cluster:
        cluster.ensure_namespace(NS, {"ns": NS})
        cluster.add_pod(NS, "a", {"app": "web"}, node="node-1")
        cluster.add_pod(NS, "b", {"app": "web"}, node="node-2")
        for node in NODES:
            cluster.start_agent(
                node, ["--lease-duration", str(LEASE_SECONDS), "--no-flow-capture"], wait=False
            )
        for node in NODES:
            wait_for(cluster.agents[node].ready, timeout=30, what=f"agent on {node} ready")
        yield Env(cluster)


def test_one_event_per_policy_and_status_realized_on_every_node(env: Env) -> None:
    env.policy(
        "half-broken",
        {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "198.18.0.0/40"}}]}]},
    )
    env.policy("nobody", {"podSelector": {"matchLabels": {"app": "gone"}}})
    env.policy("web", {"podSelector": {"matchLabels": {"app": "web"}}})
    wait_for(lambda: len(env.leaders()) == 1, timeout=20, what="one leader")
    wait_for(lambda: env.events("InvalidPolicy", "half-broken"), timeout=20, what="InvalidPolicy")
    wait_for(lambda: env.events("NoPodsSelected", "nobody"), timeout=20, what="NoPodsSelected")
    # Both agents saw both policies (each logs the invalid one) and the status says "web" is
    # programmed on both nodes: every agent had its rounds, yet one Event each.
    for agent in env.cluster.agents.values():
        wait_for(
            lambda a=agent: [
                e for e in a.events("policy_invalid_parts") if e["policy"] == "half-broken"
            ],  # type: ignore[misc]
            timeout=20,
            what="both agents saw the invalid policy",
        )
    web = wait_for(
        lambda: (s := env.status_of("web"))["realized"] and s,
        timeout=30,
        what="web realized on both nodes",
    )
    assert web["selectedPods"] == 2 and web["nodes"] == list(NODES)
    assert web["realizedNodes"] == list(NODES) and web["missingNodes"] == []
    nobody = env.status_of("nobody")
    assert nobody["selectedPods"] == 0 and nobody["nodes"] == []
    assert len(env.events("InvalidPolicy", "half-broken")) == 1
    assert len(env.events("NoPodsSelected", "nobody")) == 1
    assert not env.events("NoPodsSelected", "web")
    (leader,) = env.leaders()
    assert env.events("InvalidPolicy")[0].reporting_instance == leader


def test_the_other_agent_takes_over_when_the_leader_dies(env: Env) -> None:
    (leader,) = wait_for(
        lambda: env.leaders() if len(env.leaders()) == 1 else None, timeout=20, what="a leader"
    )
    other = next(n for n in NODES if n != leader)
    pid = env.cluster.agents[leader].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # no release: the Lease must expire
    wait_for(lambda: not env.cluster.agents[leader].running, timeout=10, what="leader gone")
    wait_for(lambda: env.leaders() == [other], timeout=LEASE_SECONDS * 10, what="failover")
    env.policy(
        "broken-later",
        {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "198.18.0.0/99"}}]}]},
    )
    event = wait_for(lambda: env.events("InvalidPolicy", "broken-later"), timeout=20, what="event")[
        0
    ]
    assert event.reporting_instance == other
    # The new leader re-judged the old policies: their Events have fixed names, so none doubled.
    wait_for(
        lambda: [e for e in env.cluster.agents[other].events("event_already_posted")],
        timeout=20,
        what="the new leader's re-post of an old Event refused",
    )
    assert len(env.events("InvalidPolicy", "half-broken")) == 1
    assert len(env.events("NoPodsSelected", "nobody")) == 1
    # node-2's agent is gone: a change of "web" is realized on one node only
    env.policy("web", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]})
    web = wait_for(
        lambda: (s := env.status_of("web"))["realizedNodes"] == [other] and s,
        timeout=30,
        what="web realized on the live node only",
    )
    assert web["missingNodes"] == [leader] and not web["realized"]
    code, _ = env.policies_cli()
    assert code == 1  # not every policy realized everywhere
