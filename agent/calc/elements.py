"""The canonical set elements of one direction of one pod, kept up to date from counted
contributions instead of recomputed from the whole snapshot. Pure.

Why: the compiler gathers everything a direction allows as a bag of pieces (a peer pod's
address x a port, an ipBlock x any port, ...) and canonicalises the whole bag (`intervals`).
When one peer pod comes or goes, only a few pieces change, yet a recompile canonicalises
thousands. Here every piece carries a count (several rules and policies may give the same
piece), and only the stretch of the address axis where a count crossed zero is canonicalised
again, widened to the old elements that touch it; elements outside that stretch stay as they
were. The result is, element for element, what `intervals.merge_addrs` and
`intervals.canonical_peer_ports` give for the whole bag (tests/unit/calc/test_incremental.py
checks it against a from-scratch compile after every step of long random walks).

Why a widened stretch is enough: canonical elements are maximal (any-port ranges never touch,
neighbouring port runs differ in their port sets), and an address outside the changed stretch
keeps its coverage, so no canonical element can cross the edge of the recomputed region.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from agent.calc import intervals, ruleset

# An address key (family, first, last), and what a piece allows there: None for any port,
# else (protocol number, first port, last port).
Key = tuple[int, int, int]
PortItem = tuple[int, int, int] | None
_FAMILY_TOP = {4: (1 << 32) - 1, 6: (1 << 128) - 1}


def _last_key(r: ruleset.AddrRange) -> tuple[int, int]:
    return (r.family, r.last)


def _first_key(r: ruleset.AddrRange) -> tuple[int, int]:
    return (r.family, r.first)


def _element_last(p: ruleset.PeerPort) -> tuple[int, int]:
    return (p.addrs.family, p.addrs.last)


def _element_first(p: ruleset.PeerPort) -> tuple[int, int]:
    return (p.addrs.family, p.addrs.first)


class Elements:
    """Counted pieces of one direction and its canonical `any_port` / `port_peers` tuples."""

    def __init__(self) -> None:
        self.counts: dict[Key, dict[PortItem, int]] = {}
        self.points: list[Key] = []  # sorted keys of one address (most pieces: pod IPs)
        self.wide: set[Key] = set()  # keys of ranges (ipBlocks, merged addresses): few
        self.any_port: tuple[ruleset.AddrRange, ...] = ()
        self.port_peers: tuple[ruleset.PeerPort, ...] = ()
        self.dirty: dict[int, tuple[int, int]] = {}  # family -> changed stretch

    def add(self, addrs: ruleset.AddrRange, item: PortItem, delta: int) -> None:
        """Count a piece in (delta 1) or out (delta -1)."""
        if addrs.first > addrs.last:
            return
        key = (addrs.family, addrs.first, addrs.last)
        entry = self.counts.get(key)
        if entry is None:
            entry = self.counts[key] = {}
            if addrs.first == addrs.last:
                bisect.insort(self.points, key)
            else:
                self.wide.add(key)
        was = entry.get(item, 0)
        now = was + delta
        if now < 0:
            raise ValueError(f"piece {key} {item} counted out more often than in")
        if now:
            entry[item] = now
        else:
            entry.pop(item, None)
        if not entry:
            del self.counts[key]
            if addrs.first == addrs.last:
                del self.points[bisect.bisect_left(self.points, key)]
            else:
                self.wide.discard(key)
        if (was == 0) != (now == 0):
            self._mark(addrs.family, addrs.first, addrs.last)

    def _mark(self, family: int, first: int, last: int) -> None:
        old = self.dirty.get(family)
        self.dirty[family] = (
            (first, last) if old is None else (min(old[0], first), max(old[1], last))
        )

    def mark_all(self) -> None:
        """Recompute every element at the next `settle` (a fresh build)."""
        for family, top in _FAMILY_TOP.items():
            self._mark(family, 0, top)

    def settle(self) -> bool:
        """Bring the canonical tuples up to date; whether they changed."""
        before = (self.any_port, self.port_peers)
        for family, (low, high) in sorted(self.dirty.items()):
            any_low, any_high = self._settle_any(family, low, high)
            self._settle_ports(family, any_low, any_high)
        self.dirty.clear()
        return (self.any_port, self.port_peers) != before

    def _keys_within(self, family: int, low: int, high: int) -> Iterable[Key]:
        """Every key of `family` whose range meets [low, high]."""
        start = bisect.bisect_left(self.points, (family, low, low))
        end = bisect.bisect_right(self.points, (family, high, high))
        yield from self.points[start:end]
        for key in self.wide:
            if key[0] == family and key[1] <= high and key[2] >= low:
                yield key

    def _settle_any(self, family: int, low: int, high: int) -> tuple[int, int]:
        """Redo the any-port ranges touching [low, high]; returns the stretch redone."""
        ranges = self.any_port
        i = bisect.bisect_left(ranges, (family, low - 1), key=_last_key)
        j = bisect.bisect_right(ranges, (family, high + 1), key=_first_key)
        if i < j:
            low, high = min(low, ranges[i].first), max(high, ranges[j - 1].last)
        pieces = [
            ruleset.AddrRange(family, max(key[1], low), min(key[2], high))
            for key in self._keys_within(family, low, high)
            if None in self.counts[key]
        ]
        self.any_port = (*ranges[:i], *intervals.merge_addrs(pieces), *ranges[j:])
        return low, high

    def _settle_ports(self, family: int, low: int, high: int) -> None:
        """Redo the port elements touching [low, high] (any-port ranges there are done)."""
        elements = self.port_peers
        i = bisect.bisect_left(elements, (family, low - 1), key=_element_last)
        j = bisect.bisect_right(elements, (family, high + 1), key=_element_first)
        if i < j:
            low, high = min(low, elements[i].addrs.first), max(high, elements[j - 1].addrs.last)
        triples: list[intervals.Triple] = []
        port_ranges: dict[tuple[int, int], ruleset.PortRange] = {}
        for key in self._keys_within(family, low, high):
            addrs = ruleset.AddrRange(family, max(key[1], low), min(key[2], high))
            for item in self.counts[key]:
                if item is None:
                    continue
                proto, first, last = item
                ports = port_ranges.get((first, last))
                if ports is None:
                    ports = port_ranges[(first, last)] = ruleset.PortRange(first, last)
                triples.append((addrs, proto, ports))
        any_port = self.any_port
        a = bisect.bisect_left(any_port, (family, low), key=_last_key)
        b = bisect.bisect_right(any_port, (family, high), key=_first_key)
        holes = [
            ruleset.AddrRange(family, max(r.first, low), min(r.last, high)) for r in any_port[a:b]
        ]
        fresh = intervals.canonical_peer_ports(triples, exclude=holes)
        self.port_peers = (*elements[:i], *fresh, *elements[j:])
