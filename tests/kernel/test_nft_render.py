"""Rendered nft scripts load into a real (throwaway) network namespace and read back.

Root only. Every namespace is named `psg-<random6>-render` and deleted by its fixture, even
when a test fails; the root namespace's firewall is never touched.
"""

from __future__ import annotations

import json

import pytest

from agent.calc import intervals, ruleset
from agent.dataplane.nft import render as render_nft
from tests.support.kernel import (
    SCTP,
    TCP,
    UDP,
    V4_BASE,
    P,
    fingerprint_in,
    load,
    run,
    tables_in,
    udp_exchange,
    v4,
    v6,
)


def apply_and_check(ns: str, rs: ruleset.PodRuleset, interfaces: list[str]) -> render_nft.Rendered:
    rendered = render_nft.render(rs, interfaces)
    load(ns, rendered.script)
    assert fingerprint_in(ns) == rendered.fingerprint
    return rendered


V4_ONLY = ruleset.PodRuleset(
    "prod",
    "web",
    ingress=ruleset.DirectionRuleset(
        isolated=True,
        any_port_peers=(intervals.cidr_range("198.18.3.0/24"),),
        port_peers=(
            ruleset.PeerPort(ruleset.AddrRange(4, V4_BASE + 1, V4_BASE + 5), TCP, P(80, 81)),
            ruleset.PeerPort(v4(9), UDP, P(53, 53)),
            ruleset.PeerPort(v4(9), SCTP, P(3868, 3868)),
        ),
        policies=("prod/a",),
    ),
)

V6_BOTH = ruleset.PodRuleset(
    "prod",
    "web6",
    ingress=ruleset.DirectionRuleset(
        isolated=True,
        any_port_peers=(intervals.cidr_range("fd00:198:18:3::/64"),),
        port_peers=(ruleset.PeerPort(v6(7), TCP, P(443, 443)),),
        policies=("prod/a",),
    ),
    egress=ruleset.DirectionRuleset(
        isolated=True,
        port_peers=(ruleset.PeerPort(v6(8), UDP, P(0, 65535)),),
        policies=("prod/b",),
    ),
)

DUAL_BOTH = ruleset.PodRuleset(
    "prod",
    "web",
    ingress=ruleset.DirectionRuleset(
        isolated=True, any_port_peers=intervals.ALL_ADDRESSES, policies=("prod/open",)
    ),
    egress=ruleset.DirectionRuleset(
        isolated=True,
        any_port_peers=(intervals.cidr_range("198.18.0.0/16"),),
        port_peers=(
            ruleset.PeerPort(intervals.ALL_V4, UDP, P(53, 53)),
            ruleset.PeerPort(intervals.ALL_V6, UDP, P(53, 53)),
        ),
        policies=("prod/dns",),
    ),
)

DENY_ALL = ruleset.PodRuleset(
    "prod",
    "web",
    ingress=ruleset.DirectionRuleset(isolated=True, policies=("prod/deny",)),
    egress=ruleset.DirectionRuleset(isolated=True, policies=("prod/deny",)),
)


def test_v4_only_ingress(netns: str) -> None:
    apply_and_check(netns, V4_ONLY, ["eth0"])
    assert tables_in(netns) == ["table inet podseg"]  # no egress isolation: no netdev table
    listing = run(  # one address, one port: the hash set
        "ip", "netns", "exec", netns, "nft", "list", "set", "inet", "podseg", "ingress_exact4"
    )
    assert "198.18.0.9 . udp . 53" in listing and "198.18.0.9 . sctp . 3868" in listing


def test_v6_and_egress_hook(netns: str) -> None:
    apply_and_check(netns, V6_BOTH, ["eth0"])
    assert sorted(tables_in(netns)) == ["table inet podseg", "table netdev podseg"]
    chain = run(
        "ip", "netns", "exec", netns, "nft", "list", "chain", "netdev", "podseg", "egress_eth0"
    )
    assert 'hook egress device "eth0"' in chain


def test_isolated_both_ways_dual_stack_and_deny_all(netns: str) -> None:
    apply_and_check(netns, DUAL_BOTH, ["eth0", "eth0p"])
    netdev = run("ip", "netns", "exec", netns, "nft", "list", "table", "netdev", "podseg")
    assert "egress_eth0 " in netdev and "egress_eth0p " in netdev
    apply_and_check(netns, DENY_ALL, ["eth0"])
    apply_and_check(netns, DENY_ALL, [])  # no interfaces: egress denied in output instead
    assert tables_in(netns) == ["table inet podseg"]


def test_many_elements(netns: str) -> None:
    peers = []
    for i in range(5000):
        peers.append(ruleset.PeerPort(v4(3 * i), TCP, P(80, 80)))
        peers.append(ruleset.PeerPort(v4(3 * i), TCP, P(8000 + i % 7, 8000 + i % 7)))
        peers.append(ruleset.PeerPort(v6(3 * i), TCP, P(80, 81)))
    any_port = tuple(v4(3 * i + 1) for i in range(5000))
    rs = ruleset.PodRuleset(
        "prod",
        "big",
        ingress=ruleset.DirectionRuleset(
            isolated=True,
            any_port_peers=any_port,
            port_peers=tuple(sorted(peers)),
            policies=("prod/big",),
        ),
        egress=ruleset.DirectionRuleset(
            isolated=True, port_peers=tuple(sorted(peers)), policies=("prod/big",)
        ),
    )
    apply_and_check(netns, rs, ["eth0"])
    listing = run(  # a port range: the addresses in its port spec's address set
        "ip", "netns", "exec", netns, "nft", "-j", "list", "set", "inet", "podseg",
        "egress_tcp_80_81_v6",
    )  # fmt: skip
    (found,) = [item["set"] for item in json.loads(listing)["nftables"] if "set" in item]
    assert found["type"] == "ipv6_addr" and len(found["elem"]) == 5000


def test_reapply_over_existing_tables_and_switch_to_not_isolated(netns: str) -> None:
    first = apply_and_check(netns, DUAL_BOTH, ["eth0"])
    again = apply_and_check(netns, DUAL_BOTH, ["eth0"])  # same script over itself
    assert again.fingerprint == first.fingerprint
    second = apply_and_check(netns, V4_ONLY, ["eth0"])
    assert second.fingerprint != first.fingerprint
    assert tables_in(netns) == ["table inet podseg"]
    ingress_only = apply_and_check(netns, V6_BOTH, ["eth0"])
    assert "table netdev podseg" in tables_in(netns)
    assert ingress_only.fingerprint != second.fingerprint
    open_pod = apply_and_check(netns, ruleset.PodRuleset("prod", "web"), ["eth0"])
    assert tables_in(netns) == ["table inet podseg"]
    chains = run("ip", "netns", "exec", netns, "nft", "list", "chains")
    assert "hook" not in chains
    assert fingerprint_in(netns) == open_pod.fingerprint


def test_delete_script_removes_everything_and_is_idempotent(netns: str) -> None:
    apply_and_check(netns, DUAL_BOTH, ["eth0"])
    assert len(tables_in(netns)) == 2
    load(netns, render_nft.delete_script())
    assert tables_in(netns) == []
    assert fingerprint_in(netns) is None
    load(netns, render_nft.delete_script())  # nothing there: still no error
    assert tables_in(netns) == []


def test_failed_script_leaves_previous_ruleset(netns: str) -> None:
    good = apply_and_check(netns, DUAL_BOTH, ["eth0"])
    broken = render_nft.render(V4_ONLY, ["nosuchdev"]).script.replace(
        "table netdev podseg {", "table netdev podseg {\n  chain x { bogus }\n"
    )
    with pytest.raises(AssertionError):
        load(netns, broken + "table inet podseg { chain y { bogus } }\n")
    assert fingerprint_in(netns) == good.fingerprint


def test_denials_are_silent_and_denied_flows_open_no_reply_path(
    pod_and_peer: tuple[str, str],
) -> None:
    pod, peer = pod_and_peer
    peer_ip = v4(20)
    rs = ruleset.PodRuleset(
        "prod",
        "web",
        ingress=ruleset.DirectionRuleset(
            isolated=True,
            port_peers=(ruleset.PeerPort(peer_ip, TCP, P(80, 80)),),
            policies=("a/b",),
        ),
        egress=ruleset.DirectionRuleset(
            isolated=True,
            port_peers=(ruleset.PeerPort(peer_ip, UDP, P(53, 53)),),
            policies=("a/b",),
        ),
    )
    apply_and_check(pod, rs, ["eth0"])
    # Allowed egress reaches the peer.
    assert udp_exchange(pod, peer, "198.18.0.20", 53, 40001) == ("sent", "got hi 40001")
    # Denied egress: send() succeeds (no EPERM), the datagram never arrives.
    assert udp_exchange(pod, peer, "198.18.0.20", 9999, 40002) == ("sent", "timeout")
    # The denied flow's conntrack entry must not admit the peer's "reply" (ingress denies UDP).
    assert udp_exchange(peer, pod, "198.18.0.10", 40002, 9999) == ("sent", "timeout")
    # Plain denied ingress.
    assert udp_exchange(peer, pod, "198.18.0.10", 80, 40003) == ("sent", "timeout")
    # Without policy the same exchanges pass (the test setup itself works).
    load(pod, render_nft.delete_script())
    assert udp_exchange(peer, pod, "198.18.0.10", 80, 40004) == ("sent", "got hi 40004")
