"""The fast paths of `render_nft` produce exactly the text of the straightforward reference
forms: dotted quads without `ipaddress`, and one address text per run. Checked piecewise and on
whole `Rendered` values of random rulesets rendered once with the reference pieces swapped in."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence

import pytest

from agent.calc import intervals, ruleset
from agent.dataplane.nft import render as render_nft

A = ruleset.AddrRange
P = ruleset.PortRange
PP = ruleset.PeerPort


def _reference_format_addr(r: ruleset.AddrRange) -> str:
    """The reference `format_addr`: everything through `ipaddress`."""
    bits = 32 if r.family == 4 else 128
    first = ipaddress.ip_address(r.first) if r.family == 4 else ipaddress.IPv6Address(r.first)
    if r.first == r.last:
        return str(first)
    size = r.last - r.first + 1
    if size & (size - 1) == 0 and r.first % size == 0:
        return f"{first}/{bits - (size.bit_length() - 1)}"
    last = ipaddress.ip_address(r.last) if r.family == 4 else ipaddress.IPv6Address(r.last)
    return f"{first}-{last}"


def _reference_port_elements(port_peers: Sequence[ruleset.PeerPort], family: int) -> list[str]:
    return [
        f"{render_nft.format_addr(e.addrs)} . {render_nft.format_protocol(e.protocol)} . "
        f"{render_nft.format_ports(e.ports)}"
        for e in port_peers
        if e.addrs.family == family
    ]


def _random_range(rnd: random.Random, family: int) -> ruleset.AddrRange:
    top = (1 << 32) - 1 if family == 4 else (1 << 128) - 1
    first = rnd.choice((0, 1, top, rnd.randrange(top + 1), 0xC6120000 + rnd.randrange(1 << 16)))
    kind = rnd.random()
    if kind < 0.5:
        last = first
    elif kind < 0.8:  # an exact prefix
        length = rnd.randrange(0, 33 if family == 4 else 129)
        size = 1 << ((32 if family == 4 else 128) - length)
        first -= first % size
        last = first + size - 1
    else:
        last = min(top, first + rnd.randrange(1, 1000))
    return A(family, first, last)


def test_format_addr_equals_ipaddress_formatting() -> None:
    rnd = random.Random(4)
    for _ in range(20_000):
        r = _random_range(rnd, rnd.choice((4, 6)))
        assert render_nft.format_addr(r) == _reference_format_addr(r), r
    for r in (A(4, 0, 0), A(4, (1 << 32) - 1, (1 << 32) - 1), A(4, 1 << 32, 1 << 32), A(6, 5, 5)):
        assert render_nft.format_addr(r) == _reference_format_addr(r)  # edges, odd family values
    with pytest.raises(ValueError):
        render_nft.format_addr(A(4, -1, -1))


def _random_ruleset(rnd: random.Random) -> ruleset.PodRuleset:
    def direction() -> ruleset.DirectionRuleset:
        if rnd.random() < 0.2:
            return ruleset.DirectionRuleset()
        triples: list[intervals.Triple] = []
        for _ in range(rnd.randrange(0, 40)):
            addrs = _random_range(rnd, rnd.choice((4, 4, 6)))
            for _ in range(rnd.choice((1, 1, 2))):
                port = rnd.randrange(1, 65000)
                triples.append(
                    (addrs, rnd.choice((6, 17, 132)), P(port, port + rnd.choice((0, 0, 5))))
                )
        any_port = intervals.merge_addrs(
            _random_range(rnd, rnd.choice((4, 6))) for _ in range(rnd.randrange(0, 4))
        )
        return ruleset.DirectionRuleset(
            isolated=True,
            any_port_peers=any_port,
            port_peers=intervals.canonical_peer_ports(triples, exclude=any_port),
            policies=tuple(sorted({f"ns/p{rnd.randrange(5)}" for _ in range(rnd.randrange(3))})),
        )

    quarantine = None
    if rnd.random() < 0.2:
        quarantine = ruleset.Quarantine(
            intervals.merge_addrs(_random_range(rnd, 4) for _ in range(rnd.randrange(3)))
        )
    guard = None
    if rnd.random() < 0.3:
        guard = ruleset.NodeGuard(
            node_addrs=intervals.merge_addrs(_random_range(rnd, 4) for _ in range(2)),
            ports=(ruleset.ProtoPorts(6, P(10250, 10250)),),
            blocked=(intervals.cidr_range("169.254.169.254/32"),),
        )
    return ruleset.PodRuleset(
        namespace="ns",
        pod=f"pod-{rnd.randrange(100)}",
        ingress=direction(),
        egress=direction(),
        mode=rnd.choice(list(ruleset.PolicyMode)),
        quarantine=quarantine,
        node_guard=guard,
    )


def test_port_elements_equal_the_per_element_form() -> None:
    rnd = random.Random(6)
    for _ in range(300):
        rs = _random_ruleset(rnd)
        for d in (rs.ingress, rs.egress):
            for family in (4, 6):
                want = _reference_port_elements(d.port_peers, family)
                assert render_nft.port_elements(d.port_peers, family) == want
    odd = (PP(A(4, 1, 1), 99, P(1, 1)), PP(A(4, 1, 1), 6, P(2, 3)), PP(A(4, 1, 1), 6, P(7, 7)))
    want = ["0.0.0.1 . 99 . 1", "0.0.0.1 . tcp . 2-3", "0.0.0.1 . tcp . 7"]
    assert render_nft.port_elements(odd, 4) == want


def test_render_equals_rendering_with_the_reference_pieces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rnd = random.Random(12)
    cases = [
        (_random_ruleset(rnd), rnd.choice(((), ("eth0",), ("eth0", "net1")))) for _ in range(150)
    ]
    fast = [render_nft.render(rs, ifaces) for rs, ifaces in cases]
    monkeypatch.setattr(render_nft, "format_addr", _reference_format_addr)
    monkeypatch.setattr(render_nft, "port_elements", _reference_port_elements)
    slow = [render_nft.render(rs, ifaces) for rs, ifaces in cases]
    assert fast == slow
    assert any(r.sets and any(elements for _, elements in r.sets) for r in fast)
