"""Neighbour discovery stays on the link, against the real kernel on both backends: an isolated
pod still resolves its on-link neighbours and is resolved by them, but a neighbour-discovery-
or MLD-typed packet to an address beyond the link no longer slips past its egress policy; a
quarantined pod keeps only what resolving its gateway needs. The peer captures what leaves.

Namespaces come from the fixtures of tests/kernel/conftest.py (`psg-...`, deleted).
"""

from __future__ import annotations

import pytest

from agent.calc import containment, intervals, ruleset
from tests.support import kernel, rawpackets
from tests.support.kernel import run

POD4, PEER4 = "198.18.0.10", "198.18.0.20"
POD6, PEER6 = "fd00:198:18::10", "fd00:198:18::20"
REMOTE6 = "fd00:198:19::99"  # beyond the link, routed through the peer
NEIGHBOUR6, NEIGHBOUR_GROUP6 = "fd00:198:18::30", "ff02::1:ff00:30"  # on-link, not the gateway
A = intervals.address_range


def routes(pod: str, peer: str) -> list[tuple[str, str | None, str]]:
    run("ip", "-n", pod, "-6", "route", "add", "fd00:198:19::/64", "via", PEER6, "dev", "eth0")
    run("ip", "netns", "exec", peer, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    return [("fd00:198:18::/64", None, "eth0"), ("fd00:198:19::/64", PEER6, "eth0")]


def link(pod: str, routed: list[tuple[str, str | None, str]]) -> ruleset.Link:
    return containment.link([kernel.link_local(pod, "eth0")], routed)


def flush(pod: str, peer: str) -> None:
    run("ip", "-n", pod, "neigh", "flush", "dev", "eth0")
    run("ip", "-n", peer, "neigh", "flush", "dev", "eth0p")


def leaves(pod: str, peer: str, sends: list[tuple[str, ...]], wanted: list[str]) -> dict[str, int]:
    """How many frames carrying each `wanted` address reach the peer while the pod sends."""
    capture = rawpackets.Capture(peer, "eth0p", wanted, 1.5)
    for send in sends:
        rawpackets.run_send(pod, *send)
    return capture.result()


@pytest.mark.parametrize("backend", kernel.BACKENDS)
def test_an_isolated_pod_resolves_its_neighbours_and_sends_no_nd_beyond_the_link(
    dual_stack: tuple[str, str], backend: str
) -> None:
    pod, peer = dual_stack
    facts = link(pod, routes(pod, peer))
    allow = ruleset.DirectionRuleset(True, (A(PEER4), A(PEER6)), (), ("prod/peer",))
    rs = ruleset.PodRuleset("prod", "web", ingress=allow, egress=allow, link=facts)
    kernel.commit(pod, rs, backend)
    flush(pod, peer)
    # Address resolution both ways: the pod solicits the peer, the peer solicits the pod.
    assert rawpackets.received(peer, "::", pod, [("raw6", POD6, PEER6)]) == [POD6]
    flush(pod, peer)
    assert rawpackets.received(pod, "::", peer, [("raw6", PEER6, POD6)]) == [PEER6]
    # Typed as neighbour discovery (hop limit 255) or MLD (hop limit 1), to a remote address:
    # routed through the peer before, dropped by the egress policy now.
    seen = leaves(pod, peer, [("ns6", POD6, REMOTE6, REMOTE6), ("mld6", POD6, REMOTE6)], [REMOTE6])
    assert seen == {REMOTE6: 0}


@pytest.mark.parametrize("backend", kernel.BACKENDS)
def test_a_quarantined_pod_resolves_its_gateway_and_nothing_else(
    dual_stack: tuple[str, str], backend: str
) -> None:
    pod, peer = dual_stack
    # The peer plays the pod's gateway and its forensic workstation.
    facts = link(pod, [("::/0", PEER6, "eth0"), ("fd00:198:18::/64", None, "eth0")])
    forensic = ruleset.Quarantine(allow_from=(A(PEER4), A(PEER6)))
    rs = ruleset.PodRuleset("prod", "web", quarantine=forensic, link=facts)
    kernel.commit(pod, rs, backend)
    flush(pod, peer)
    # The gateway resolves the pod and reaches it (forensic traffic in).
    assert rawpackets.received(pod, "::", peer, [("raw6", PEER6, POD6)]) == [PEER6]
    # Soliciting any other neighbour (its group or itself) goes nowhere.
    sends = [
        ("ns6", POD6, NEIGHBOUR_GROUP6, NEIGHBOUR6),
        ("ns6", POD6, "ff02::1", NEIGHBOUR6),
        ("na6", POD6, "ff02::1", POD6),
    ]
    assert leaves(pod, peer, sends, [NEIGHBOUR_GROUP6, "ff02::1"]) == {
        NEIGHBOUR_GROUP6: 0,
        "ff02::1": 0,
    }
    # ... while soliciting the gateway does.
    gateway_group = "ff02::1:ff00:20"
    assert (
        leaves(pod, peer, [("ns6", POD6, gateway_group, PEER6)], [gateway_group])[gateway_group]
        == 1
    )
