"""Interval arithmetic: exact unions, canonical output, checked against a brute-force model."""

from __future__ import annotations

import bisect
import random

import pytest

from agent.policy import intervals, ruleset

A = ruleset.AddrRange
P = ruleset.PortRange


def test_cidr_range_v4_v6_and_host_bits() -> None:
    assert intervals.cidr_range("10.0.0.0/8") == A(4, 10 << 24, (11 << 24) - 1)
    assert intervals.cidr_range("10.1.2.3/8") == A(4, 10 << 24, (11 << 24) - 1)
    assert intervals.cidr_range("::/0") == intervals.ALL_V6
    assert intervals.cidr_range("fd00::1/128") == A(6, (0xFD00 << 112) + 1, (0xFD00 << 112) + 1)
    with pytest.raises(ValueError):
        intervals.cidr_range("10.0.0.0/33")


def test_address_range() -> None:
    assert intervals.address_range("198.18.0.1") == A(4, 0xC6120001, 0xC6120001)
    with pytest.raises(ValueError):
        intervals.address_range("nope")


def test_cidr_minus_excepts() -> None:
    got = intervals.cidr_minus("198.18.0.0/16", ["198.18.1.0/24", "198.18.0.0/24", "fd00::/8"])
    assert got == (A(4, 0xC6120200, 0xC612FFFF),)
    got = intervals.cidr_minus("198.18.0.0/24", ["198.18.0.128/25"])
    assert got == (A(4, 0xC6120000, 0xC612007F),)
    assert intervals.cidr_minus("198.18.0.0/24", ["198.18.0.0/16"]) == ()
    mid = intervals.cidr_minus("198.18.0.0/24", ["198.18.0.16/28"])
    assert mid == (A(4, 0xC6120000, 0xC612000F), A(4, 0xC6120020, 0xC61200FF))


def test_merge_addrs_joins_touching_and_keeps_families_apart() -> None:
    got = intervals.merge_addrs([A(4, 5, 9), A(6, 0, 3), A(4, 0, 4), A(4, 20, 30), A(4, 25, 26)])
    assert got == (A(4, 0, 9), A(4, 20, 30), A(6, 0, 3))
    # v4 max and v6 zero are not "touching"
    assert intervals.merge_addrs([intervals.ALL_V4, A(6, 0, 0)]) == (intervals.ALL_V4, A(6, 0, 0))


def test_merge_ports() -> None:
    assert intervals.merge_ports([P(80, 81), P(82, 90), P(100, 100), P(85, 86)]) == (
        P(80, 90),
        P(100, 100),
    )


def test_contains() -> None:
    rs = intervals.merge_addrs([A(4, 10, 20), A(4, 30, 40), A(6, 10, 20)])
    assert intervals.contains(rs, 4, 10) and intervals.contains(rs, 4, 40)
    assert not intervals.contains(rs, 4, 25) and not intervals.contains(rs, 4, 41)
    assert intervals.contains(rs, 6, 15) and not intervals.contains(rs, 6, 21)
    assert not intervals.contains((), 4, 1)


def _expand_addrs(
    ranges: tuple[ruleset.AddrRange, ...] | list[ruleset.AddrRange],
) -> set[tuple[int, int]]:
    return {(r.family, a) for r in ranges for a in range(r.first, r.last + 1)}


def test_subtract_random_against_sets() -> None:
    rnd = random.Random(7)
    for _ in range(300):
        a = [A(rnd.choice((4, 6)), x, x + rnd.randrange(8)) for x in rnd.sample(range(60), 6)]
        b = [A(rnd.choice((4, 6)), x, x + rnd.randrange(8)) for x in rnd.sample(range(60), 6)]
        got = intervals.subtract_addrs(intervals.merge_addrs(a), intervals.merge_addrs(b))
        assert _expand_addrs(list(got)) == _expand_addrs(a) - _expand_addrs(b)
        assert got == intervals.merge_addrs(got)  # already canonical


def _expand(
    pp: list[ruleset.PeerPort] | tuple[ruleset.PeerPort, ...],
) -> set[tuple[int, int, int, int]]:
    return {
        (e.addrs.family, a, e.protocol, p)
        for e in pp
        for a in range(e.addrs.first, e.addrs.last + 1)
        for p in range(e.ports.first, e.ports.last + 1)
    }


def _random_triples(rnd: random.Random, n: int) -> list[intervals.Triple]:
    out: list[intervals.Triple] = []
    for _ in range(n):
        a = rnd.randrange(24)
        p = rnd.randrange(16)
        out.append(
            (
                A(rnd.choice((4, 4, 6)), a, a + rnd.randrange(6)),
                rnd.choice((6, 17)),
                P(p, p + rnd.randrange(5)),
            )
        )
    return out


def test_canonical_peer_ports_random_against_brute_force() -> None:
    rnd = random.Random(1234)
    for _ in range(400):
        triples = _random_triples(rnd, rnd.randrange(1, 12))
        exclude = intervals.merge_addrs(
            A(4, x, x + rnd.randrange(3)) for x in rnd.sample(range(30), rnd.randrange(3))
        )
        got = intervals.canonical_peer_ports(triples, exclude=exclude)
        want = {
            t
            for t in _expand([ruleset.PeerPort(a, pr, p) for a, pr, p in triples])
            if (t[0], t[1]) not in _expand_addrs(list(exclude))
        }
        assert _expand(got) == want
        # disjoint: the element volumes add up to the union's size
        volume = sum(
            (e.addrs.last - e.addrs.first + 1) * (e.ports.last - e.ports.first + 1) for e in got
        )
        assert volume == len(want)
        assert list(got) == sorted(got)
        # canonical: any other bag with the same union gives the identical tuple
        shuffled = list(triples)
        rnd.shuffle(shuffled)
        assert intervals.canonical_peer_ports(shuffled, exclude=exclude) == got
        as_points = [(A(f, a, a), pr, P(p, p)) for f, a, pr, p in want]
        assert intervals.canonical_peer_ports(as_points) == got


def test_address_runs_are_maximal_and_ports_merged() -> None:
    got = intervals.canonical_peer_ports(
        [
            (A(4, 1, 1), 6, P(80, 80)),
            (A(4, 1, 1), 6, P(81, 90)),
            (A(4, 1, 1), 17, P(53, 53)),
            (A(4, 2, 2), 6, P(85, 85)),
            (A(4, 3, 5), 6, P(85, 85)),
            (A(4, 7, 7), 6, P(85, 85)),
            (A(6, 3, 5), 6, P(85, 85)),
        ]
    )
    assert got == (
        ruleset.PeerPort(A(4, 1, 1), 6, P(80, 90)),
        ruleset.PeerPort(A(4, 1, 1), 17, P(53, 53)),
        ruleset.PeerPort(A(4, 2, 5), 6, P(85, 85)),
        ruleset.PeerPort(A(4, 7, 7), 6, P(85, 85)),
        ruleset.PeerPort(A(6, 3, 5), 6, P(85, 85)),
    )


def test_exclude_removes_addresses_everywhere() -> None:
    got = intervals.canonical_peer_ports(
        [(A(4, 0, 9), 6, P(80, 80)), (A(6, 0, 9), 6, P(80, 80))], exclude=(A(4, 3, 4),)
    )
    assert got == (
        ruleset.PeerPort(A(4, 0, 2), 6, P(80, 80)),
        ruleset.PeerPort(A(4, 5, 9), 6, P(80, 80)),
        ruleset.PeerPort(A(6, 0, 9), 6, P(80, 80)),
    )


def test_ten_thousand_peers_stay_exact_and_compact() -> None:
    """10k scattered pod IPs, per-pod named ports with varying numbers, broad rules on top.

    Its speed is measured by scripts/bench/compile_scale.py, not asserted here."""
    rnd = random.Random(5)
    base = 0xC6120000
    triples: list[intervals.Triple] = []
    for i in range(10_000):
        addr = A(4, base + 2 * i, base + 2 * i)
        named = 2000 + 7 * rnd.randrange(50)
        triples.append((addr, 6, P(80, 80)))
        triples.append((addr, 6, P(named, named)))
        triples.append((A(6, 3 * i, 3 * i), 6, P(named, named)))
        if i % 2:
            triples.append((addr, 6, P(1024, 65535)))
        lo = rnd.randrange(60000)
        triples.append((addr, 132, P(lo, lo + rnd.randrange(5000))))
    triples.append((intervals.ALL_V4, 17, P(53, 53)))
    exclude = tuple(A(4, base + 100_000 + 2 * i, base + 100_000 + 2 * i) for i in range(5_000))
    got = intervals.canonical_peer_ports(triples, exclude=exclude)
    assert ruleset.PeerPort(A(4, base, base), 6, P(80, 80)) in got
    assert len(got) < 100_000
    excluded = sorted(x.first for x in exclude)
    for element in got:
        if element.addrs.family == 4:
            i = bisect.bisect_left(excluded, element.addrs.first)
            assert i == len(excluded) or excluded[i] > element.addrs.last, element
