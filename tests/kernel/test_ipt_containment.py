"""The iptables backend's containment and drop capture against the real kernel: quarantine,
node guard and visibility mode with live UDP probes, drops seen by the NFLOG reader process and
counted through the worker's `counters` op (`backend: iptables`).

Namespaces come from the fixtures of tests/kernel/conftest.py (`psg-...`, deleted).
"""

from __future__ import annotations

import os

import pytest

from agent.calc import intervals, ruleset
from agent.dataplane import client as dp_client
from agent.dataplane.nft import render as render_nft
from tests.support import dataplane as dpt
from tests.support import kernel, privilege
from tests.support.kernel import UDP, P, udp_exchange, v4

pytestmark = [
    pytest.mark.skipif(not privilege.has("ipset"), reason="needs ipset (scripts/setup.sh)"),
    pytest.mark.skipif(
        not privilege.has("iptables-restore"), reason="needs iptables (scripts/setup.sh)"
    ),
]
POD, PEER = "198.18.0.10", "198.18.0.20"
EG, IN = ruleset.Direction.EGRESS, ruleset.Direction.INGRESS
ENF, VIS = ruleset.PolicyMode.ENFORCE, ruleset.PolicyMode.VISIBILITY


def counters(ns: str) -> dict[str, int]:
    async def go(client: dp_client.WorkerClient) -> dict[str, dict[str, int]]:
        return await dpt.counters(client, {"k": kernel.target(ns)}, "iptables")

    return kernel.with_worker(go).get("k", {})


def count(ns: str, direction: ruleset.Direction, reason: str, mode: ruleset.PolicyMode) -> int:
    return counters(ns).get(render_nft.counter_name(direction, reason, mode), 0)


def allow_peer_udp(port_in: int, port_out: int, **extra: object) -> ruleset.PodRuleset:
    peer = v4(20)
    return ruleset.PodRuleset(
        "prod",
        "web",
        ingress=ruleset.DirectionRuleset(
            True, (), (ruleset.PeerPort(peer, UDP, P(port_in, port_in)),), ("a/b",)
        ),
        egress=ruleset.DirectionRuleset(
            True, (), (ruleset.PeerPort(peer, UDP, P(port_out, port_out)),), ("a/b",)
        ),
        **extra,  # type: ignore[arg-type]
    )


def test_quarantine_isolates_established_flows_and_admits_only_forensics(
    pod_and_peer: tuple[str, str],
) -> None:
    pod, peer = pod_and_peer
    kernel.apply_iptables(pod, allow_peer_udp(80, 53))
    assert udp_exchange(pod, peer, PEER, 53, 42001) == ("sent", "got hi 42001")
    assert udp_exchange(peer, pod, POD, 42001, 53)[1] == "got hi 53"  # the flow's reply
    kernel.apply_iptables(pod, allow_peer_udp(80, 53, quarantine=ruleset.Quarantine()))
    # whatever the policies allow, nothing passes either way, the open flow included
    assert udp_exchange(peer, pod, POD, 80, 42002) == ("sent", "timeout")
    assert udp_exchange(peer, pod, POD, 42001, 53) == ("sent", "timeout")
    assert udp_exchange(pod, peer, PEER, 53, 42003) == ("sent", "timeout")  # silent: no EPERM
    assert count(pod, IN, "quarantine", ENF) >= 2
    assert count(pod, EG, "quarantine", ENF) >= 1
    # a forensic source may open flows to the pod; the pod still opens none
    kernel.apply_iptables(
        pod, allow_peer_udp(80, 53, quarantine=ruleset.Quarantine(allow_from=(v4(20),)))
    )
    assert udp_exchange(peer, pod, POD, 9000, 42004) == ("sent", "got hi 42004")
    assert udp_exchange(pod, peer, PEER, 53, 42005) == ("sent", "timeout")
    # lifting the quarantine restores the policies
    kernel.apply_iptables(pod, allow_peer_udp(80, 53))
    assert udp_exchange(pod, peer, PEER, 53, 42006) == ("sent", "got hi 42006")


def test_node_guard_blocks_node_ports_and_blocked_addresses_whatever_policies_allow(
    pod_and_peer: tuple[str, str],
) -> None:
    pod, peer = pod_and_peer
    open_egress = ruleset.DirectionRuleset(True, (intervals.ALL_V4,), (), ("a/all",))
    guard = ruleset.NodeGuard(node_addrs=(v4(20),), ports=(ruleset.ProtoPorts(UDP, P(5353, 5354)),))
    kernel.apply_iptables(
        pod, ruleset.PodRuleset("prod", "web", egress=open_egress, node_guard=guard)
    )
    assert udp_exchange(pod, peer, PEER, 5353, 42101) == ("sent", "timeout")
    assert udp_exchange(pod, peer, PEER, 53, 42102) == ("sent", "got hi 42102")
    assert count(pod, EG, "node-guard", ENF) >= 1
    assert count(pod, EG, "policy", ENF) == 0
    # a blocked address, any port; also without any policy isolating the pod
    blocked = ruleset.NodeGuard(blocked=(v4(20),))
    kernel.apply_iptables(pod, ruleset.PodRuleset("prod", "web", node_guard=blocked))
    assert udp_exchange(pod, peer, PEER, 53, 42103) == ("sent", "timeout")
    assert udp_exchange(peer, pod, POD, 80, 42104) == ("sent", "got hi 42104")  # ingress open
    kernel.apply_iptables(pod, ruleset.PodRuleset("prod", "web"))
    assert udp_exchange(pod, peer, PEER, 53, 42105) == ("sent", "got hi 42105")


def test_visibility_mode_logs_and_counts_but_drops_nothing(
    pod_and_peer: tuple[str, str],
) -> None:
    pod, peer = pod_and_peer
    reader = kernel.ReaderProc()
    try:
        path = f"/run/netns/{pod}"
        reader.send(op="open", key="prod/web", path=path, ino=os.stat(path).st_ino)
        reader.wait(lambda m: m.get("opened") == "prod/web")
        kernel.apply_iptables(pod, allow_peer_udp(80, 53, mode=VIS))
        assert udp_exchange(peer, pod, POD, 81, 42201) == ("sent", "got hi 42201")
        assert udp_exchange(pod, peer, PEER, 54, 42202) == ("sent", "got hi 42202")
        # the replies of a would-be-denied flow are not cut (no DENY_MARK in visibility)
        assert udp_exchange(peer, pod, POD, 42202, 54)[1] == "got hi 54"
        assert count(pod, IN, "policy", VIS) == 1
        assert count(pod, EG, "policy", VIS) == 1
        for prefix in ("podseg ingress policy visibility", "podseg egress policy visibility"):
            reader.wait(lambda m, p=prefix: any(x[0] == p for x in m.get("packets", [])))
        # enforce mode: same probes dropped, logged with the enforce prefix, counted
        kernel.apply_iptables(pod, allow_peer_udp(80, 53))
        assert udp_exchange(peer, pod, POD, 81, 42203) == ("sent", "timeout")
        assert udp_exchange(pod, peer, PEER, 54, 42204) == ("sent", "timeout")
        assert count(pod, IN, "policy", ENF) == 1 and count(pod, EG, "policy", ENF) >= 1
        got = reader.wait(
            lambda m: any(p[0] == "podseg ingress policy enforce" for p in m.get("packets", []))
        )
        assert any(p[1:3] == [PEER, POD] for p in got["packets"])
    finally:
        reader.close()
