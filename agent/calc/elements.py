"""The canonical set elements of one direction of one pod, patched where the allowed traffic
changed instead of recomputed from the whole snapshot. Pure.

Why: the compiler gathers everything a direction allows as a bag of pieces (a peer pod's
address x a port, an ipBlock x any port, ...) and canonicalises the whole bag (`intervals`).
When one peer pod comes or goes, only a few pieces change, yet a recompile canonicalises
thousands. Here the caller marks the stretch of the address axis where pieces may have
changed, and only that stretch is canonicalised again, widened to the old elements that touch
it, from the pieces the caller lists for it; elements outside that stretch stay as they were.
No piece is stored: the caller derives them from its memberships, so the memory is the
elements themselves. The result is, element for element, what `intervals.merge_addrs` and
`intervals.canonical_peer_ports` give for the whole bag (tests/unit/calc/test_incremental.py
checks it against a from-scratch compile after every step of long random walks).

Why a widened stretch is enough: canonical elements are maximal (any-port ranges never touch,
neighbouring port runs differ in their port sets), and an address outside the changed stretch
keeps its coverage, so no canonical element can cross the edge of the recomputed region.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable

from agent.calc import intervals, ruleset

# An address key (family, first, last), and what a piece allows there: None for any port,
# else (protocol number, first port, last port).
PortItem = tuple[int, int, int] | None
Piece = tuple[ruleset.AddrRange, PortItem]
# The pieces of a direction whose addresses meet [low, high] of a family (more do no harm).
Pieces = Callable[[int, int, int], Iterable[Piece]]
# A settled direction's canonical tuples: (any_port, port_peers).
Settled = tuple[tuple[ruleset.AddrRange, ...], tuple[ruleset.PeerPort, ...]]
_FAMILY_TOP = {4: (1 << 32) - 1, 6: (1 << 128) - 1}


_FRESH = {family: (0, top) for family, top in _FAMILY_TOP.items()}


def _last_key(r: ruleset.AddrRange) -> tuple[int, int]:
    return (r.family, r.last)


def _first_key(r: ruleset.AddrRange) -> tuple[int, int]:
    return (r.family, r.first)


def _element_last(p: ruleset.PeerPort) -> tuple[int, int]:
    return (p.addrs.family, p.addrs.last)


def _element_first(p: ruleset.PeerPort) -> tuple[int, int]:
    return (p.addrs.family, p.addrs.first)


class Elements:
    """A direction's canonical `any_port` / `port_peers` tuples and the stretches to redo."""

    __slots__ = ("any_port", "dirty", "port_peers")

    def __init__(self) -> None:
        self.any_port: tuple[ruleset.AddrRange, ...] = ()
        self.port_peers: tuple[ruleset.PeerPort, ...] = ()
        self.dirty: dict[int, tuple[int, int]] = {}  # family -> changed stretch

    def mark(self, family: int, first: int, last: int) -> None:
        """Pieces may have changed somewhere in [first, last] of `family`."""
        old = self.dirty.get(family)
        if old is None:
            self.dirty[family] = (first, last)
        else:
            self.dirty[family] = (min(old[0], first), max(old[1], last))

    def mark_all(self) -> None:
        """Recompute every element at the next `settle` (a fresh build)."""
        for family, top in _FAMILY_TOP.items():
            self.mark(family, 0, top)

    def fresh(self) -> bool:
        """Whether the next `settle` recomputes every element of both families (a fresh
        build, whose result depends only on the pieces, not on the elements before)."""
        return self.dirty == _FRESH

    def settled(self) -> Settled:
        """The canonical tuples (immutable: safe to share with another `Elements`)."""
        return self.any_port, self.port_peers

    def adopt(self, settled: Settled) -> None:
        """Take a fresh build's result from another `Elements` of the same pieces."""
        self.any_port, self.port_peers = settled
        self.dirty.clear()

    def settle(self, pieces: Pieces) -> bool:
        """Bring the canonical tuples up to date from `pieces`; whether they changed."""
        before = (self.any_port, self.port_peers)
        for family, (low, high) in sorted(self.dirty.items()):
            source = pieces
            if low == 0 and high == _FAMILY_TOP[family]:  # a fresh build: list them once
                listed = list(pieces(family, low, high))

                def source(*_: int, listed: list[Piece] = listed) -> list[Piece]:
                    return listed

            any_low, any_high = self._settle_any(source, family, low, high)
            self._settle_ports(source, family, any_low, any_high)
        self.dirty.clear()
        return (self.any_port, self.port_peers) != before

    def _settle_any(self, pieces: Pieces, family: int, low: int, high: int) -> tuple[int, int]:
        """Redo the any-port ranges touching [low, high]; returns the stretch redone."""
        ranges = self.any_port
        i = bisect.bisect_left(ranges, (family, low - 1), key=_last_key)
        j = bisect.bisect_right(ranges, (family, high + 1), key=_first_key)
        if i < j:
            low, high = min(low, ranges[i].first), max(high, ranges[j - 1].last)
        fresh = [
            ruleset.AddrRange(family, max(a.first, low), min(a.last, high))
            for a, item in pieces(family, low, high)
            if item is None and a.family == family and a.first <= high and a.last >= low
        ]
        self.any_port = ranges[:i] + intervals.merge_addrs(fresh) + ranges[j:]
        return low, high

    def _settle_ports(self, pieces: Pieces, family: int, low: int, high: int) -> None:
        """Redo the port elements touching [low, high] (any-port ranges there are done)."""
        elements = self.port_peers
        i = bisect.bisect_left(elements, (family, low - 1), key=_element_last)
        j = bisect.bisect_right(elements, (family, high + 1), key=_element_first)
        if i < j:
            low, high = min(low, elements[i].addrs.first), max(high, elements[j - 1].addrs.last)
        triples: list[intervals.Triple] = []
        port_ranges: dict[tuple[int, int], ruleset.PortRange] = {}
        for addrs, item in pieces(family, low, high):
            if item is None or addrs.family != family or addrs.first > high or addrs.last < low:
                continue
            if addrs.first < low or addrs.last > high:
                addrs = ruleset.AddrRange(family, max(addrs.first, low), min(addrs.last, high))
            proto, first, last = item
            ports = port_ranges.get((first, last))
            if ports is None:
                ports = port_ranges[(first, last)] = ruleset.PortRange(first, last)
            triples.append((addrs, proto, ports))
        any_port = self.any_port
        start = bisect.bisect_left(any_port, (family, low), key=_last_key)
        end = bisect.bisect_right(any_port, (family, high), key=_first_key)
        holes = [
            ruleset.AddrRange(family, max(r.first, low), min(r.last, high))
            for r in any_port[start:end]
        ]
        fresh = intervals.canonical_peer_ports(triples, exclude=holes)
        self.port_peers = elements[:i] + fresh + elements[j:]
