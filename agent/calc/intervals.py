"""Canonical interval arithmetic over addresses and ports.

The compiler gathers allowed traffic as an arbitrary bag of overlapping pieces (several rules,
several policies, a named port resolved per peer pod). Rulesets must be canonical -- the same
allowed traffic always yields the same tuples, whatever the input order -- so fingerprints only
change when the kernel state has to, and nftables interval sets get disjoint elements. This
module turns such bags into sorted, disjoint, merged tuples of `ruleset` types.
"""

from __future__ import annotations

import bisect
import collections
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agent.calc import ruleset

MAX_PORT = 65535
ALL_PORTS = ruleset.PortRange(0, MAX_PORT)
ALL_V4 = ruleset.AddrRange(4, 0, (1 << 32) - 1)
ALL_V6 = ruleset.AddrRange(6, 0, (1 << 128) - 1)
ALL_ADDRESSES = (ALL_V4, ALL_V6)

Triple = tuple[ruleset.AddrRange, int, ruleset.PortRange]


def cidr_range(cidr: str) -> ruleset.AddrRange:
    """The inclusive address range of a CIDR (host bits are ignored). Raises ValueError."""
    net = ipaddress.ip_network(cidr.strip(), strict=False)
    return ruleset.AddrRange(net.version, int(net.network_address), int(net.broadcast_address))


def address_range(ip: str) -> ruleset.AddrRange:
    """A single address as a one-address range. Raises ValueError."""
    addr = ipaddress.ip_address(ip.strip())
    return ruleset.AddrRange(addr.version, int(addr), int(addr))


def _addr_order(r: ruleset.AddrRange) -> tuple[int, int, int]:
    return (r.family, r.first, r.last)


def _port_order(r: ruleset.PortRange) -> tuple[int, int]:
    return (r.first, r.last)


def merge_addrs(ranges: Iterable[ruleset.AddrRange]) -> tuple[ruleset.AddrRange, ...]:
    """Sorted, disjoint ranges covering exactly the union; touching ranges are joined."""
    out: list[ruleset.AddrRange] = []
    for r in sorted(ranges, key=_addr_order):  # the dataclass order, compared in C
        if r.first > r.last:
            continue
        if out and out[-1].family == r.family and r.first <= out[-1].last + 1:
            if r.last > out[-1].last:
                out[-1] = ruleset.AddrRange(r.family, out[-1].first, r.last)
        else:
            out.append(r)
    return tuple(out)


def merge_ports(ranges: Iterable[ruleset.PortRange]) -> tuple[ruleset.PortRange, ...]:
    """Sorted, disjoint port ranges covering exactly the union; touching ranges are joined."""
    out: list[ruleset.PortRange] = []
    for r in sorted(ranges, key=_port_order):
        if r.first > r.last:
            continue
        if out and r.first <= out[-1].last + 1:
            if r.last > out[-1].last:
                out[-1] = ruleset.PortRange(out[-1].first, r.last)
        else:
            out.append(r)
    return tuple(out)


def subtract_addrs(
    ranges: Sequence[ruleset.AddrRange], minus: Sequence[ruleset.AddrRange]
) -> tuple[ruleset.AddrRange, ...]:
    """`ranges` minus `minus`; both must be canonical (as from `merge_addrs`)."""
    out: list[ruleset.AddrRange] = []
    j = 0
    for r in ranges:
        family, first, last = r.family, r.first, r.last
        # Jump near r, then skip holes entirely before it (holes are sorted and disjoint).
        j = max(j, bisect.bisect_left(minus, ruleset.AddrRange(family, first, -1)) - 1, 0)
        while j < len(minus) and (minus[j].family, minus[j].last) < (family, first):
            j += 1
        k = j
        while k < len(minus) and minus[k].family == family and minus[k].first <= last:
            hole = minus[k]
            if hole.first > first:
                out.append(ruleset.AddrRange(family, first, hole.first - 1))
            first = max(first, hole.last + 1)
            if first > last:
                break
            k += 1
        if first <= last:
            out.append(ruleset.AddrRange(family, first, last))
    return tuple(out)


def cidr_minus(cidr: str, excepts: Iterable[str]) -> tuple[ruleset.AddrRange, ...]:
    """An ipBlock: the CIDR minus its exceptions, canonical. Raises ValueError on bad input.

    Exceptions of the other address family simply remove nothing.
    """
    return subtract_addrs((cidr_range(cidr),), merge_addrs(cidr_range(e) for e in excepts))


def contains(ranges: Sequence[ruleset.AddrRange], family: int, value: int) -> bool:
    """Whether a canonical range tuple contains the address; O(log n)."""
    i = bisect.bisect_right(ranges, ruleset.AddrRange(family, value, 1 << 129)) - 1
    return i >= 0 and ranges[i].family == family and ranges[i].first <= value <= ranges[i].last


def canonical_peer_ports(
    triples: Iterable[Triple], exclude: Sequence[ruleset.AddrRange] = ()
) -> tuple[ruleset.PeerPort, ...]:
    """Disjoint, sorted `PeerPort`s whose union is exactly the union of `triples`.

    `exclude` (canonical) is removed from every element: the compiler passes the peers already
    allowed on any port, so they are not repeated here.

    The decomposition is address-major: each family's address axis is cut into maximal runs
    on which the allowed (protocol, port) set is constant and non-empty, and each run emits
    one element per protocol and merged port range. That shape depends only on the union, so
    equal unions give identical output. Address-major (rather than port-major) because peer
    sets are large and scattered (pod IPs) while each peer has few port ranges: when named
    ports resolve to different numbers on different pods, a port-major cut would repeat every
    scattered address in every port run (measured: 535k vs ~30k elements for 10k pods).

    Cost: this runs for every direction of every recompiled pod, on typically
    100-200 scattered single addresses with one or two ports each. Distinct address keys are
    grouped into clusters of overlapping keys; a lone key (the usual case) is its own run minus
    the holes, and only a cluster of several keys takes the boundary sweep. Port sets are
    canonicalised once per distinct set, and runs come out in order, so no final sort.
    """
    by_key = _by_address_key(triples)
    if not by_key:
        return ()
    return _elements(_runs(by_key, _holes_by_family(exclude)))


def _by_address_key(triples: Iterable[Triple]) -> dict[tuple[int, int, int], list[Any]]:
    """The triples grouped by address range: (family, first, last) -> [its AddrRange (reused
    in the output), (proto, first port, last port), ...]. Plain-int tuples inside: hashing and
    ordering them is done in C, unlike the dataclasses. A pair may repeat (several policies
    allow the same thing): the canonical form merges it. Empty ranges are dropped."""
    by_key: dict[tuple[int, int, int], list[Any]] = {}
    for addrs, proto, ports in triples:
        first, last, pfirst, plast = addrs.first, addrs.last, ports.first, ports.last
        if first > last or pfirst > plast:
            continue
        key = (addrs.family, first, last)
        entry = by_key.get(key)
        if entry is None:
            by_key[key] = [addrs, (proto, pfirst, plast)]
        else:
            entry.append((proto, pfirst, plast))
    return by_key


def _runs(
    by_key: dict[tuple[int, int, int], list[Any]], holes_of: dict[int, list[tuple[int, int]]]
) -> list[_Run]:
    """Maximal address runs with a constant port set, in order: a lone key is its own run
    minus the holes; a cluster of overlapping keys takes the boundary sweep."""
    canon: dict[object, _PortSet] = {}
    runs: list[_Run] = []
    keys = sorted(by_key)
    i, n = 0, len(keys)
    while i < n:
        family, first, last = key = keys[i]
        j = i + 1
        reach = last
        while j < n and keys[j][1] <= reach and keys[j][0] == family:
            reach = max(reach, keys[j][2])
            j += 1
        holes = holes_of.get(family)
        if j > i + 1:  # overlapping keys: sweep their boundaries
            for run in _cluster_runs(family, keys[i:j], holes or (), by_key):
                _add_run(runs, *run)
            i = j
            continue
        i = j
        entry = by_key[key]
        # A lone pair is its own canonical form; more are keyed by their frozenset.
        memo: object = entry[1] if len(entry) == 2 else frozenset(entry[1:])
        port_set = canon.get(memo)
        if port_set is None:
            port_set = canon[memo] = _canonical_pairs(entry[1:])
        if holes:
            for piece_first, piece_last in _minus_holes(first, last, holes):
                _add_run(runs, family, piece_first, piece_last, port_set)
            continue
        if runs:
            prev_family, prev_first, prev_last, prev_set, _ = runs[-1]
            if prev_family == family and prev_last + 1 == first and prev_set == port_set:
                runs[-1] = (family, prev_first, last, prev_set, None)
                continue
        runs.append((family, first, last, port_set, entry[0]))  # the key's own AddrRange
    return runs


def _elements(runs: list[_Run]) -> tuple[ruleset.PeerPort, ...]:
    """One PeerPort per run and protocol/port range of its set, sharing equal PortRanges."""
    out: list[ruleset.PeerPort] = []
    peer_port = ruleset.PeerPort
    port_objects: dict[tuple[int, int], ruleset.PortRange] = {}
    for family, first, last, port_set, own in runs:
        run_addrs = own if own is not None else ruleset.AddrRange(family, first, last)
        for proto, port_first, port_last in port_set:
            run_ports = port_objects.get((port_first, port_last))
            if run_ports is None:
                run_ports = port_objects[(port_first, port_last)] = ruleset.PortRange(
                    port_first, port_last
                )
            out.append(peer_port(run_addrs, proto, run_ports))
    return tuple(out)


# A canonical port set: sorted, merged (protocol, first port, last port); and a run of
# addresses (family, first, last) allowing one, with the AddrRange to reuse when it has one.
_PortSet = tuple[tuple[int, int, int], ...]
_Run = tuple[int, int, int, _PortSet, ruleset.AddrRange | None]


def _holes_by_family(exclude: Sequence[ruleset.AddrRange]) -> dict[int, list[tuple[int, int]]]:
    """`exclude` as sorted, merged (first, last) pairs per family (empty ranges dropped)."""
    out: dict[int, list[tuple[int, int]]] = {}
    for family, first, last in sorted((e.family, e.first, e.last) for e in exclude):
        if first > last:
            continue
        merged = out.setdefault(family, [])
        if merged and first <= merged[-1][1] + 1:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return out


def _minus_holes(first: int, last: int, holes: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """[first, last] minus sorted, disjoint `holes`, as (first, last) pieces in order."""
    if not holes:
        return [(first, last)]
    pieces: list[tuple[int, int]] = []
    k = max(bisect.bisect_left(holes, (first, -1)) - 1, 0)
    while k < len(holes) and holes[k][0] <= last:
        hole_first, hole_last = holes[k]
        if hole_last >= first:
            if hole_first > first:
                pieces.append((first, hole_first - 1))
            first = max(first, hole_last + 1)
            if first > last:
                return pieces
        k += 1
    pieces.append((first, last))
    return pieces


def _add_run(
    runs: list[_Run],
    family: int,
    first: int,
    last: int,
    port_set: _PortSet,
    addrs: ruleset.AddrRange | None = None,
) -> None:
    """Append a run in address order, joining it to the previous one when they touch and
    allow the same ports (runs are maximal)."""
    if runs:
        prev_family, prev_first, prev_last, prev_set, _ = runs[-1]
        if prev_family == family and prev_last + 1 == first and prev_set == port_set:
            runs[-1] = (family, prev_first, last, prev_set, None)
            return
    runs.append((family, first, last, port_set, addrs))


def _canonical_pairs(pairs: Iterable[tuple[int, int, int]]) -> _PortSet:
    """The canonical form of (protocol, first, last) pairs: sorted, merged per protocol."""
    merged: list[tuple[int, int, int]] = []
    for proto, first, last in sorted(pairs):
        if merged and merged[-1][0] == proto and first <= merged[-1][2] + 1:
            if last > merged[-1][2]:
                merged[-1] = (proto, merged[-1][1], last)
        else:
            merged.append((proto, first, last))
    return tuple(merged)


def _cluster_runs(
    family: int,
    keys: Sequence[tuple[int, int, int]],
    holes: Sequence[tuple[int, int]],
    entries: Mapping[tuple[int, int, int], list[Any]],
) -> list[_Run]:
    """Maximal runs (constant, non-empty canonical port set) over overlapping keys of one
    family: a sweep over the distinct boundaries of the keys and the holes they touch."""
    starts: dict[int, list[tuple[int, int, int] | None]] = collections.defaultdict(list)
    ends: dict[int, list[tuple[int, int, int] | None]] = collections.defaultdict(list)
    low, high = keys[0][1], max(key[2] for key in keys)
    for key in keys:
        starts[key[1]].append(key)
        ends[key[2] + 1].append(key)
    for hole_first, hole_last in holes:  # None marks an excluded stretch
        if hole_last >= low and hole_first <= high:
            starts[hole_first].append(None)
            ends[hole_last + 1].append(None)
    bounds = sorted(set(starts) | set(ends))

    active: set[tuple[int, int, int]] = set()
    excluded = 0
    runs: list[_Run] = []
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
        pairs = {pair for key in active for pair in entries[key][1:]}
        _add_run(runs, family, bound, bounds[i + 1] - 1, _canonical_pairs(pairs))
    return runs
