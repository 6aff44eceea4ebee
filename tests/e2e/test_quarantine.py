"""Quarantine, live: the label cuts new and established TCP connections in both directions,
overrides policy allows, lets the forensic CIDR in, reports itself, and lifts cleanly."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import probe
from tests.support import live
from tests.support.polling import wait_for

ECHO = 7000
BUDGET = 5.0  # seconds from the PATCH to isolation; measured figures are far lower (README)
QUARANTINE = {"podseg.io/quarantine": "true"}
ALLOW_FROM = "podseg.io/quarantine-allow-from"


class Env:
    def __init__(self, cluster: sandbox_cluster.SandboxCluster) -> None:
        self.cluster = cluster

    @property
    def agent(self) -> sandbox_cluster.AgentProcess:
        return self.cluster.agents["node-1"]

    def pod(self, key: str) -> Any:
        return self.cluster.pods[key]

    def verdict(self, src: str, dst: str, port: int = 80, proto: str = "tcp") -> str:
        return probe.probe(self.pod(src), self.pod(dst).ipv4, port, proto, timeout=0.5)

    def wait_verdict(self, src: str, dst: str, want: str, port: int = 80) -> None:
        wait_for(
            lambda: self.verdict(src, dst, port) == want,
            timeout=BUDGET,
            what=f"{src}->{dst}:{port} {want}",
        )

    def hold(self, src: str, dst: str) -> probe.HeldConnection:
        held = probe.HeldConnection(self.pod(src), self.pod(dst).ipv4, ECHO)
        assert held.connected, f"{src}->{dst} did not connect: {held.verdict}"
        return held

    def events(self, reason: str) -> list[Any]:
        items = self.cluster.core.list_namespaced_event("q").items
        return [e for e in items if e.reason == reason]


@pytest.fixture(scope="module", params=live.BACKENDS)
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    """The quarantine cluster, once per dataplane backend."""
    with sandbox_cluster.SandboxCluster(nodes=("node-1",)) as cluster:
        cluster.ensure_namespace("q", {"ns": "q"})
        cluster.ensure_namespace("ops", {"ns": "ops"})
        for name in ("victim", "peer"):
            cluster.add_pod("q", name, {"pod": name}, echo_ports=(ECHO,))
        cluster.add_pod("ops", "forensic", {"pod": "forensic"})
        # An explicit allow-everything policy: quarantine must override it.
        cluster.apply_policy(
            {
                "metadata": {"namespace": "q", "name": "allow-all"},
                "spec": {
                    "podSelector": {},
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{}],
                    "egress": [{}],
                },
            }
        )
        cluster.start_agent("node-1", live.backend_args(request))
        yield Env(cluster)


@pytest.fixture
def clean(env: Env) -> Iterator[Env]:
    env.cluster.label_pod("q/victim", {"podseg.io/quarantine": None})
    env.cluster.annotate_pod("q/victim", {ALLOW_FROM: None})
    env.wait_verdict("q/peer", "q/victim", probe.OK)
    yield env


def test_quarantine_cuts_everything_but_forensic_access(clean: Env) -> None:
    env = clean
    forensic_ip = env.pod("ops/forensic").ipv4
    env.cluster.annotate_pod("q/victim", {ALLOW_FROM: f"{forensic_ip}/32"})
    inbound = env.hold("q/peer", "q/victim")  # established, into the pod
    outbound = env.hold("q/victim", "q/peer")  # established, out of the pod
    assert env.verdict("q/victim", "ops/forensic") == probe.OK
    cut_before = live.sample(env.agent, "podseg_connections_cut_total", reason="quarantine")

    patched = time.monotonic()
    env.cluster.label_pod("q/victim", QUARANTINE)

    for held in (inbound, outbound):
        report = held.wait_broken(BUDGET)
        assert report["broken"] == "timeout", report  # silently dropped, not reset
        assert report["exchanges"] > 0
        assert report["last_ok"] - patched < BUDGET
    # New connections, both directions, TCP and UDP: silently dropped despite allow-all.
    env.wait_verdict("q/peer", "q/victim", probe.TIMEOUT)
    for proto in ("tcp", "udp"):
        assert env.verdict("q/peer", "q/victim", 80, proto) == probe.TIMEOUT
        assert env.verdict("q/victim", "q/peer", 80, proto) == probe.TIMEOUT
    # Forensic access: the listed source gets in; the pod cannot reach out to it.
    assert env.verdict("ops/forensic", "q/victim") == probe.OK
    assert env.verdict("ops/forensic", "q/victim", 80, "udp") == probe.OK
    assert env.verdict("q/victim", "ops/forensic") == probe.TIMEOUT
    # Its conntrack entries were deleted; it is reported (metric, Event, log with since-when).
    cut_after = live.sample(env.agent, "podseg_connections_cut_total", reason="quarantine")
    assert (cut_after or 0) >= (cut_before or 0) + 2  # at least the two held connections
    assert live.sample(env.agent, "podseg_quarantined_pods", namespace="q") == 1
    event = wait_for(lambda: env.events("Quarantined"), what="Quarantined event")[0]
    assert event.involved_object.name == "victim" and forensic_ip in event.message
    logged = [e for e in env.agent.events("pod_quarantined") if e.get("pod") == "victim"]
    assert logged and logged[-1]["since"].startswith("20")

    # Removing the label restores normal enforcement (allow-all).
    env.cluster.label_pod("q/victim", {"podseg.io/quarantine": None})
    env.wait_verdict("q/peer", "q/victim", probe.OK)
    assert env.verdict("q/victim", "q/peer") == probe.OK
    assert env.verdict("q/victim", "ops/forensic") == probe.OK
    wait_for(
        lambda: not live.sample(env.agent, "podseg_quarantined_pods", namespace="q"),
        what="quarantine gauge back to 0",
    )
    assert env.agent.events("pod_quarantine_lifted")


def test_bad_annotation_still_quarantines_and_says_why(clean: Env) -> None:
    env = clean
    forensic_ip = env.pod("ops/forensic").ipv4
    env.cluster.annotate_pod("q/victim", {ALLOW_FROM: f"not-a-cidr, {forensic_ip}/32, 300.1.2.3/8"})
    env.cluster.label_pod("q/victim", QUARANTINE)
    env.wait_verdict("q/peer", "q/victim", probe.TIMEOUT)
    assert env.verdict("q/victim", "q/peer") == probe.TIMEOUT
    assert env.verdict("ops/forensic", "q/victim") == probe.OK  # the valid entry still counts
    event = wait_for(
        lambda: env.events("InvalidQuarantineAnnotation"), what="InvalidQuarantineAnnotation"
    )[0]
    assert "not-a-cidr" in event.message and "300.1.2.3/8" in event.message
    assert env.agent.running


def test_quarantine_overrides_a_policy_change_made_while_quarantined(clean: Env) -> None:
    env = clean
    env.cluster.label_pod("q/victim", QUARANTINE)
    env.wait_verdict("q/peer", "q/victim", probe.TIMEOUT)
    env.cluster.apply_policy(
        {
            "metadata": {"namespace": "q", "name": "allow-peer-80"},
            "spec": {
                "podSelector": {"matchLabels": {"pod": "victim"}},
                "ingress": [{"ports": [{"port": 80}]}],
            },
        }
    )
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # bounded: stays blocked while the agent catches up
            assert env.verdict("q/peer", "q/victim") == probe.TIMEOUT
    finally:
        env.cluster.delete_policy("q", "allow-peer-80")


def test_quarantine_holds_over_ipv6_and_neighbour_discovery_reaches_only_the_gateway(
    clean: Env,
) -> None:
    env = clean
    forensic = env.pod("ops/forensic")
    peer6, victim6 = env.pod("q/peer").ipv6, env.pod("q/victim").ipv6
    assert peer6 and victim6 and forensic.ipv6
    node6 = env.cluster.nodes["node-1"].ipv6
    env.cluster.annotate_pod("q/victim", {ALLOW_FROM: f"{forensic.ipv4}/32,{forensic.ipv6}/128"})
    env.cluster.label_pod("q/victim", QUARANTINE)
    victim, peer = env.pod("q/victim"), env.pod("q/peer")
    wait_for(
        lambda: probe.probe(peer, victim6, 80, timeout=0.5) == probe.TIMEOUT,
        timeout=BUDGET,
        what="peer->victim over IPv6 blocked",
    )
    # Forget every neighbour: from now on the pod must resolve its gateway again, which the
    # quarantine's neighbour discovery allows (and nothing else: tests/kernel/test_nd_link.py).
    subprocess.run(["ip", "-n", victim.netns, "-6", "neigh", "flush", "dev", "eth0"], check=True)
    for proto in ("tcp", "udp"):
        assert probe.probe(peer, victim6, 80, proto, timeout=0.5) == probe.TIMEOUT
        assert probe.probe(victim, peer6, 80, proto, timeout=0.5) == probe.TIMEOUT
        assert probe.probe(victim, node6, 8080, proto, timeout=0.5) == probe.TIMEOUT
        assert probe.probe(forensic, victim6, 80, proto, timeout=0.5) == probe.OK
    assert probe.probe(victim, forensic.ipv6, 80, timeout=0.5) == probe.TIMEOUT
