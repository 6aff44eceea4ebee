"""Per-policy hit counts end to end, with each dataplane backend: real probes through real pod
namespaces move the kernel counter of the policy that allowed them, and only that one, and
`podseg_rule_hits_total` keeps counting up when a pod that fed it goes away."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import prometheus_client.parser
import pytest

from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import probe
from tests.support import live
from tests.support.polling import wait_for

NS = "rh"


class Env:
    def __init__(self, cluster: sandbox_cluster.SandboxCluster) -> None:
        self.cluster = cluster

    @property
    def agent(self) -> sandbox_cluster.AgentProcess:
        return self.cluster.agents["node-1"]

    def probe(self, src: str, dst: str) -> str:
        return probe.probe(self.cluster.pods[src], self.cluster.pods[dst].ipv4, 80, "tcp", 0.5)

    def hits(self, policy: str, direction: str = "ingress") -> float:
        status, text = self.agent.http("/metrics")
        assert status == 200
        total = 0.0
        for family in prometheus_client.parser.text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "podseg_rule_hits_total" and s.labels == {
                    "namespace": NS,
                    "policy": policy,
                    "direction": direction,
                }:
                    total += float(s.value)
        return total

    def allow(self, name: str, selected: dict[str, str], source: str) -> None:
        self.cluster.apply_policy(
            {
                "metadata": {"namespace": NS, "name": name},
                "spec": {
                    "podSelector": {"matchLabels": selected},
                    "policyTypes": ["Ingress"],
                    "ingress": [
                        {
                            "from": [{"podSelector": {"matchLabels": {"pod": source}}}],
                            "ports": [{"protocol": "TCP", "port": 80}],
                        }
                    ],
                },
            }
        )


@pytest.fixture(scope="module", params=live.BACKENDS)
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    with sandbox_cluster.SandboxCluster(nodes=("node-1",)) as cluster:
        cluster.ensure_namespace(NS, {"ns": NS})
        for name in ("a", "b", "c", "web1", "web2"):
            labels: dict[str, Any] = {"pod": name}
            if name.startswith("web"):
                labels["role"] = "web"
            cluster.add_pod(NS, name, labels)
        cluster.start_agent("node-1", ["--flow-window", "0.3", *live.backend_args(request)])
        yield Env(cluster)


def test_allowed_traffic_counts_for_its_policy_only_and_never_goes_back(env: Env) -> None:
    env.allow("from-a", {"role": "web"}, "a")
    env.allow("from-b", {"role": "web"}, "b")
    for target in ("web1", "web2"):  # c is allowed by neither: isolation is in place
        wait_for(
            lambda t=target: env.probe(f"{NS}/c", f"{NS}/{t}") == probe.TIMEOUT,  # type: ignore[misc]
            timeout=20,
            what=f"{target} isolated",
        )
    assert env.probe(f"{NS}/b", f"{NS}/web1") == probe.OK
    # From here on, only a talks: policy from-a's counter moves, from-b's stays where it is.
    wait_for(lambda: env.hits("from-b") >= 1, timeout=10, what="from-b counted its probe")
    before_b = env.hits("from-b")
    for target in ("web1", "web2", "web1", "web2"):
        assert env.probe(f"{NS}/a", f"{NS}/{target}") == probe.OK
    # 4 connections: at least their SYNs (later packets of a connection take the established
    # shortcut before any policy)
    wait_for(lambda: env.hits("from-a") >= 4, timeout=10, what="from-a counted a's probes")
    assert env.hits("from-b") == before_b
    # A counted pod goes away: the total keeps what it had, then grows with web1's traffic.
    total = env.hits("from-a")
    pod = env.cluster.pods.pop(f"{NS}/web2")
    env.cluster.core.delete_namespaced_pod("web2", NS)
    env.cluster.sandbox.remove_pod(pod)
    wait_for(
        lambda: [e for e in env.agent.events("flow_reader_closed") if e["pod"] == f"{NS}/web2"],
        timeout=20,
        what="the agent let go of web2",
    )
    assert env.hits("from-a") >= total
    assert env.probe(f"{NS}/a", f"{NS}/web1") == probe.OK
    wait_for(lambda: env.hits("from-a") > total, timeout=10, what="web1's hit counted")
    # pod names and IPs never become labels
    text = env.agent.http("/metrics")[1]
    hit_lines = [line for line in text.splitlines() if line.startswith("podseg_rule_hits_total")]
    assert hit_lines and not [line for line in hit_lines if "web1" in line or "198.18" in line]


def test_deleted_policy_loses_its_series(env: Env) -> None:
    env.allow("short-lived", {"role": "web"}, "a")
    wait_for(
        lambda: env.probe(f"{NS}/a", f"{NS}/web1") == probe.OK and env.hits("short-lived") > 0,
        timeout=20,
        what="short-lived counted",
    )
    env.cluster.delete_policy(NS, "short-lived")
    wait_for(
        lambda: 'policy="short-lived"' not in env.agent.http("/metrics")[1],
        timeout=20,
        what="series of the deleted policy removed",
    )
