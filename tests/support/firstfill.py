"""Rulesets for the tests of a split first commit (`agent.dataplane.nft.firstfill`): peers of
both families in every kind of peer set, named ports, ranges, ipBlock with except, and an
Admin tier whose Deny set must be in the kernel from the first step on."""

from __future__ import annotations

import ipaddress

from agent import model
from agent.calc import intervals, ruleset
from agent.tiers import compile as tiers_compile
from agent.tiers import model as tiers
from tests.support import admintier

V4 = int(ipaddress.IPv4Address("198.18.0.0"))
V6 = int(ipaddress.IPv6Address("fd00:198:18::"))
LOCAL = model.Pod("app", "local", node_name="n1", ips=("198.18.0.10",))


def _single(family: int, n: int) -> ruleset.AddrRange:
    base = V4 if family == 4 else V6
    return ruleset.AddrRange(family, base + n, base + n)


def admin_deny(addresses: list[str], port: int) -> tuple[ruleset.TierEntry, ...]:
    """An Admin tier that denies TCP `port` from `addresses` (pods of namespace t0)."""
    peers = [
        tiers_compile.Peer(
            (intervals.address_range(ip),),
            model.Pod("t0", f"d{n}", node_name="n2", ips=(ip,)),
            {"team": "t0", "kubernetes.io/metadata.name": "t0"},
        )
        for n, ip in enumerate(addresses)
    ]
    rule = tiers.Rule(
        "deny-some",
        tiers.DENY,
        (tiers.Peer(namespaces=model.LabelSelector((("team", "t0"),))),),
        (tiers.Port("TCP", port, port),),
    )
    return admintier.ingress_entries(rule, LOCAL, peers)


def broad(
    peers: int = 400,
    allowed: tuple[ruleset.AddrRange, ...] = (),
    denied: tuple[str, ...] = (),
    egress: bool = True,
) -> ruleset.PodRuleset:
    """A pod whose ingress allows `peers` single addresses of each family on TCP 80 and UDP
    81 (hash sets), every fourth also on 8000-8010 (a port spec's interval sets), address
    ranges and an ipBlock with an except on any port, and `allowed` on any port; egress the
    same on TCP 443 (`egress`); the Admin tier denies TCP 80 from `denied` above all that."""
    port_peers: list[ruleset.PeerPort] = []
    for n in range(peers):
        for family in (4, 6):
            addrs = _single(family, 1000 + 3 * n)
            port_peers.append(ruleset.PeerPort(addrs, 6, ruleset.PortRange(80, 80)))
            port_peers.append(ruleset.PeerPort(addrs, 17, ruleset.PortRange(81, 81)))
            if n % 4 == 0:
                port_peers.append(ruleset.PeerPort(addrs, 6, ruleset.PortRange(8000, 8010)))
    block = [
        (ruleset.AddrRange(4, V4 + (1 << 14), V4 + (1 << 14) + 255), 6, ruleset.PortRange(90, 99))
    ]
    anys = [
        ruleset.AddrRange(4, V4 + (1 << 15), V4 + (1 << 15) + 99),  # a range
        ruleset.AddrRange(6, V6 + (1 << 20), V6 + (1 << 20) + (1 << 16) - 1),  # a prefix
        *allowed,
    ]
    # ipBlock 198.18.96.0/20 except 198.18.100.0/24: two ranges around the hole
    anys += [
        ruleset.AddrRange(4, V4 + (96 << 8), V4 + (100 << 8) - 1),
        ruleset.AddrRange(4, V4 + (101 << 8), V4 + (112 << 8) - 1),
    ]
    merged = intervals.merge_addrs(anys)
    ported = intervals.canonical_peer_ports(
        [(e.addrs, e.protocol, e.ports) for e in port_peers] + block, exclude=merged
    )
    ingress = ruleset.DirectionRuleset(
        True,
        merged,
        ported,
        ("app/allow",),
        per_policy=(ruleset.PolicyPeers("app/allow", merged, ported),),
        admin=admin_deny(list(denied), 80) if denied else (),
    )
    out = ruleset.DirectionRuleset()
    if egress:
        out = ruleset.DirectionRuleset(
            True,
            (),
            intervals.canonical_peer_ports(
                (_single(f, 1000 + 3 * n), 6, ruleset.PortRange(443, 443))
                for n in range(peers)
                for f in (4, 6)
            ),
            ("app/out",),
        )
    return ruleset.PodRuleset("app", "local", ingress=ingress, egress=out)
