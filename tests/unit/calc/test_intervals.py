"""Interval arithmetic: exact unions, canonical output, checked against a brute-force model."""

from __future__ import annotations

import bisect
import collections
import dataclasses
import random
from typing import Any

import pytest

from agent.calc import intervals, ruleset

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


# --- the decomposition against its reference sweep -----------------------------------------


def _reference_canonical_peer_ports(
    triples: list[intervals.Triple], exclude: tuple[ruleset.AddrRange, ...] = ()
) -> tuple[ruleset.PeerPort, ...]:
    """The reference algorithm, the specification of `canonical_peer_ports`: one sweep
    over every address boundary of a family, the active keys' port set recomputed per segment,
    runs joined when they touch with equal port sets, then one sort."""
    by_addr: dict[ruleset.AddrRange, set[tuple[int, ruleset.PortRange]]] = collections.defaultdict(
        set
    )
    for addrs, proto, ports in triples:
        if addrs.first <= addrs.last and ports.first <= ports.last:
            by_addr[addrs].add((proto, ports))
    out: list[ruleset.PeerPort] = []
    for family in sorted({a.family for a in by_addr}):
        starts: dict[int, list[ruleset.AddrRange | None]] = collections.defaultdict(list)
        ends: dict[int, list[ruleset.AddrRange | None]] = collections.defaultdict(list)
        for key in (a for a in by_addr if a.family == family):
            starts[key.first].append(key)
            ends[key.last + 1].append(key)
        for hole in (e for e in exclude if e.family == family):
            starts[hole.first].append(None)
            ends[hole.last + 1].append(None)
        bounds = sorted(set(starts) | set(ends))
        active: set[ruleset.AddrRange] = set()
        excluded = 0
        runs: list[tuple[ruleset.AddrRange, tuple[tuple[int, ruleset.PortRange], ...]]] = []
        for i, bound in enumerate(bounds[:-1]):
            for ending in ends.get(bound, ()):
                if ending is None:
                    excluded -= 1
                else:
                    active.discard(ending)
            for starting in starts.get(bound, ()):
                if starting is None:
                    excluded += 1
                else:
                    active.add(starting)
            if excluded or not active:
                continue
            per_proto: dict[int, list[ruleset.PortRange]] = collections.defaultdict(list)
            for key in active:
                for proto, ports in by_addr[key]:
                    per_proto[proto].append(ports)
            current = tuple(
                (proto, ports)
                for proto in sorted(per_proto)
                for ports in intervals.merge_ports(per_proto[proto])
            )
            last = bounds[i + 1] - 1
            if runs and runs[-1][1] == current and runs[-1][0].last + 1 == bound:
                runs[-1] = (A(family, runs[-1][0].first, last), current)
            else:
                runs.append((A(family, bound, last), current))
        for addrs, port_set in runs:
            out.extend(ruleset.PeerPort(addrs, proto, ports) for proto, ports in port_set)
    out.sort()
    return tuple(out)


def _random_bag(rnd: random.Random) -> tuple[list[intervals.Triple], tuple[ruleset.AddrRange, ...]]:
    """A bag of triples in one of several shapes, and canonical holes (possibly none)."""
    shape = rnd.choice(("scattered", "overlapping", "adjacent", "mixed", "wide"))
    triples: list[intervals.Triple] = []
    n = rnd.randrange(0, 40)
    for _ in range(n):
        family = rnd.choice((4, 4, 6))
        if shape == "scattered":  # pod IPs: single addresses, one or two ports
            a = rnd.randrange(0, 400, rnd.choice((1, 3, 10)))
            b = a
        elif shape == "adjacent":  # neighbours that should merge into one run
            a = rnd.randrange(40)
            b = a + rnd.randrange(2)
        elif shape == "wide":
            a = rnd.randrange(1 << 10)
            b = a + rnd.randrange(1 << 9)
        else:
            a = rnd.randrange(60)
            b = a + rnd.randrange(12 if shape == "overlapping" else 3)
        if family == 6 and rnd.random() < 0.3:  # large v6 values too
            a, b = a + (0xFD00 << 112), b + (0xFD00 << 112)
        for _ in range(rnd.choice((1, 1, 2, 3))):
            p = rnd.choice((80, 81, 82, 443, 8000, rnd.randrange(1, 100)))
            q = p + rnd.choice((0, 0, 0, 1, 2, 30))
            if rnd.random() < 0.03:
                p, q = q + 1, q  # an empty port range: ignored
            triples.append((A(family, a, b), rnd.choice((6, 6, 17, 132)), P(p, q)))
        if rnd.random() < 0.3 and triples:  # the same address again (several policies)
            triples.append(rnd.choice(triples))
    if rnd.random() < 0.03:
        triples.append((A(4, 9, 8), 6, P(80, 80)))  # an empty address range: ignored
    holes: list[ruleset.AddrRange] = []
    if rnd.random() < 0.5:
        for _ in range(rnd.randrange(1, 6)):
            family = rnd.choice((4, 6))
            a = rnd.randrange(0, 400)
            holes.append(A(family, a, a + rnd.choice((0, 0, 1, 5, 40))))
    return triples, intervals.merge_addrs(holes)


def test_canonical_peer_ports_equals_the_reference_sweep() -> None:
    """Same tuples (values and order) as the reference algorithm, over random bags:
    scattered single addresses, overlapping and adjacent ranges, wide ranges, holes, both
    families, duplicate keys, port ranges that merge, several protocols, empty ranges."""
    rnd = random.Random(2026)
    for _ in range(3000):
        triples, exclude = _random_bag(rnd)
        want = _reference_canonical_peer_ports(triples, exclude)
        got = intervals.canonical_peer_ports(triples, exclude=exclude)
        assert got == want, (triples, exclude)
        shuffled = list(triples)
        rnd.shuffle(shuffled)
        assert intervals.canonical_peer_ports(iter(shuffled), exclude=exclude) == want


def test_canonical_peer_ports_typical_pod_program_matches_the_sweep() -> None:
    """The benchmark's shape: ~100-200 scattered /32 peers with a port or two, no holes, and
    the same with the local node's address excluded."""
    rnd = random.Random(8)
    base = 0xC6128000
    for _ in range(30):
        triples: list[intervals.Triple] = []
        for _ in range(rnd.randrange(100, 200)):
            addr = base + rnd.randrange(10_000)
            port = 8000 + rnd.randrange(50)
            triples.append((A(4, addr, addr), 6, P(port, port)))
            if rnd.random() < 0.3:
                triples.append((A(4, addr, addr), 6, P(port + 1, port + 1)))
        for exclude in ((), (A(4, base + 5_000, base + 5_000),)):
            got = intervals.canonical_peer_ports(triples, exclude=exclude)
            assert got == _reference_canonical_peer_ports(triples, exclude)


def test_overlapping_cluster_next_to_lone_keys_joins_runs() -> None:
    """A run made by the sweep of an overlapping cluster joins a touching lone key's run."""
    triples = [
        (A(4, 0, 5), 6, P(80, 80)),
        (A(4, 3, 9), 6, P(80, 80)),  # overlaps the first: a cluster
        (A(4, 10, 10), 6, P(80, 80)),  # touches the cluster, same ports: one run 0-10
        (A(4, 11, 11), 17, P(53, 53)),
    ]
    assert intervals.canonical_peer_ports(triples) == (
        ruleset.PeerPort(A(4, 0, 10), 6, P(80, 80)),
        ruleset.PeerPort(A(4, 11, 11), 17, P(53, 53)),
    )


def test_merges_sorting_by_field_tuples_equal_the_dataclass_order() -> None:
    """merge_addrs/merge_ports sort by a tuple key (compared in C); the result is the one of
    the dataclass order they replaced."""
    rnd = random.Random(77)
    for _ in range(500):
        addrs = [
            A(rnd.choice((4, 6)), f, f + rnd.randrange(-1, 6))
            for f in (rnd.randrange(50) for _ in range(rnd.randrange(0, 30)))
        ]
        ports = [P(f, f + rnd.randrange(-1, 6)) for f in (rnd.randrange(50) for _ in range(20))]
        for merge, items in ((intervals.merge_addrs, addrs), (intervals.merge_ports, ports)):
            got = merge(items)
            out: list[Any] = []
            for r in sorted(items):  # the reference: the dataclasses' own ordering
                if r.first > r.last:
                    continue
                if (
                    out
                    and getattr(out[-1], "family", 0) == getattr(r, "family", 0)
                    and (r.first <= out[-1].last + 1)
                ):
                    if r.last > out[-1].last:
                        out[-1] = dataclasses.replace(out[-1], last=r.last)
                else:
                    out.append(r)
            assert got == tuple(out)
