"""Whether a pod's ruleset admits one connection, evaluated like the kernel program does. Pure.

Strict mode and quarantine cut established connections that the current ruleset no longer
allows: the worker lists the pod namespace's conntrack entries, and `illegal` picks the ones to
delete. The evaluation mirrors `render_nft`: quarantine first (only forensic sources, and the
pod's replies to them), then the node guard (egress only), then the Admin tier, then the
direction's policy sets (or, when no policy isolates it, the Baseline tier).
A connection is judged by its original direction: the pod is its destination (ingress, the
peer is the source) or its source (egress, the peer is the destination). Loopback entries and
entries not involving the pod's addresses are left alone.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar

from agent.calc import intervals, ruleset
from agent.tiers import compile as tiers_compile

_PORTED = frozenset(ruleset.PROTOCOL_NUMBERS.values())


def _in(ranges: Sequence[ruleset.AddrRange], family: int, value: int) -> bool:
    return intervals.contains(ranges, family, value)


def allows(
    rs: ruleset.PodRuleset,
    direction: ruleset.Direction,
    peer: str,
    protocol: int,
    port: int | None,
) -> bool:
    """Whether `rs` lets a connection with `peer` start in `direction` (destination `port`)."""
    addr = ipaddress.ip_address(peer)
    family, value = addr.version, int(addr)
    if rs.quarantine is not None:
        return direction is ruleset.Direction.INGRESS and _in(
            rs.quarantine.allow_from, family, value
        )
    if direction is ruleset.Direction.EGRESS and rs.node_guard is not None:
        guard = rs.node_guard
        if _in(guard.blocked, family, value):
            return False
        if (
            port is not None
            and _in(guard.node_addrs, family, value)
            and any(
                g.protocol == protocol and g.ports.first <= port <= g.ports.last
                for g in guard.ports
            )
        ):
            return False
    d = rs.ingress if direction is ruleset.Direction.INGRESS else rs.egress
    admin = _tier(d.admin, family, value, protocol, port)
    if admin is not None and admin is not ruleset.TierAction.PASS:
        return admin is ruleset.TierAction.ACCEPT
    if not d.isolated:
        return _tier(d.baseline, family, value, protocol, port) is not ruleset.TierAction.DENY
    if _in(d.any_port_peers, family, value):
        return True
    if port is None or protocol not in _PORTED:
        return False
    return any(
        e.addrs.family == family
        and e.addrs.first <= value <= e.addrs.last
        and e.protocol == protocol
        and e.ports.first <= port <= e.ports.last
        for e in d.port_peers
    )


def _tier(
    entries: Sequence[ruleset.TierEntry], family: int, value: int, protocol: int, port: int | None
) -> ruleset.TierAction | None:
    """The action of the tier entry holding the connection (protocols without ports match
    the OTHER_PROTOCOL elements), None when none does."""
    if protocol not in _PORTED:
        protocol, port = ruleset.OTHER_PROTOCOL, 0
    elif port is None:
        return None
    entry = tiers_compile.lookup(entries, family, value, protocol, port)
    return entry.action if entry is not None else None


class Connection(Protocol):
    """A conntrack entry's original tuple, as the dataplane reports it."""

    @property
    def src(self) -> str: ...

    @property
    def dst(self) -> str: ...

    @property
    def proto(self) -> int: ...

    @property
    def dport(self) -> int | None: ...


C = TypeVar("C", bound=Connection)


def illegal(rs: ruleset.PodRuleset, pod_ips: Iterable[str], entries: Iterable[C]) -> list[C]:
    """The conntrack entries that `rs` does not allow (connections of the pod's own
    addresses; loopback and others' entries are left alone)."""
    own = {str(ipaddress.ip_address(ip)) for ip in pod_ips}
    out = []
    for entry in entries:
        src, dst = str(entry.src), str(entry.dst)
        proto = int(entry.proto or 0)
        port = int(entry.dport) if entry.dport is not None and proto in _PORTED else None
        try:
            if dst in own and src not in own:
                ok = allows(rs, ruleset.Direction.INGRESS, src, proto, port)
            elif src in own and dst not in own:
                ok = allows(rs, ruleset.Direction.EGRESS, dst, proto, port)
            else:
                continue  # loopback or someone else's: not a connection of the pod's
        except ValueError:
            continue
        if not ok:
            out.append(entry)
    return out


def removes_allows(old: ruleset.PodRuleset | None, new: ruleset.PodRuleset) -> bool:
    """Whether `new` may forbid a connection `old` allowed (conservative: may say yes).

    Listing a namespace's conntrack table walks the kernel's whole (global) hash, tens of
    milliseconds, so strict mode skips it when a change only adds allows.

    It runs for every recompiled pod in strict mode, so it avoids the quadratic comparison of
    every old element with every new one: elements present unchanged in `new` are covered by
    themselves (a set lookup), and only the others are looked up in sorted containment
    indexes. The answer equals that of the pairwise comparison (`_removes_allows_reference`,
    checked by a randomised test) for any input.
    """
    if old is None:
        return True
    if new.quarantine is not None and new.quarantine != old.quarantine:
        return True
    if new.node_guard is not None and _guards_more(old.node_guard, new.node_guard):
        return True
    return any(
        _tiers_may_narrow(before, after) or _direction_narrows(before, after)
        for before, after in ((old.ingress, new.ingress), (old.egress, new.egress))
    )


def _tiers_may_narrow(before: ruleset.DirectionRuleset, after: ruleset.DirectionRuleset) -> bool:
    """With admin tiers, any change of the direction may forbid something (conservative: a
    Deny that moved, a Pass that now reaches a stricter tier, a NetworkPolicy that no longer
    isolates in front of a Baseline Deny)."""
    return bool(after.admin or after.baseline) and before != after


def _direction_narrows(before: ruleset.DirectionRuleset, after: ruleset.DirectionRuleset) -> bool:
    """Whether `after` may forbid something `before` allowed, for one direction."""
    if not after.isolated:
        return False
    if not before.isolated:
        return True
    any_port: _Cover | None = None
    if before.any_port_peers != after.any_port_peers:
        any_port = _Cover(after.any_port_peers)
        for r in before.any_port_peers:
            if not any_port.holds(r.family, r.first, r.last):
                return True
    if not before.port_peers or before.port_peers is after.port_peers:
        return False
    kept = {
        (n.addrs.family, n.addrs.first, n.addrs.last, n.protocol, n.ports.first, n.ports.last)
        for n in after.port_peers
    }
    rest = [
        flat
        for flat in (
            (e.addrs.family, e.addrs.first, e.addrs.last, e.protocol, e.ports.first, e.ports.last)
            for e in before.port_peers
        )
        if flat not in kept
    ]
    if not rest:
        return False
    if any_port is None:
        any_port = _Cover(after.any_port_peers)
    ported = _PortCover(kept)
    for family, first, last, protocol, port_first, port_last in rest:
        if any_port.holds(family, first, last):
            continue
        if not ported.holds(family, first, last, protocol, port_first, port_last):
            return True
    return False


class _Cover:
    """Answers "does one range of these hold all of [first, last]?" in O(log n) for any
    (even unsorted or overlapping) ranges: per family, the ranges sorted by start, with the
    running maximum of their ends (a range starting at or before `first` reaches `last` iff
    that maximum, up to the last such start, does)."""

    def __init__(self, ranges: Sequence[ruleset.AddrRange]) -> None:
        self._starts: dict[int, list[int]] = {}
        self._reach: dict[int, list[int]] = {}
        for family, first, last in sorted((r.family, r.first, r.last) for r in ranges):
            starts = self._starts.setdefault(family, [])
            reach = self._reach.setdefault(family, [])
            starts.append(first)
            reach.append(max(last, reach[-1]) if reach else last)

    def holds(self, family: int, first: int, last: int) -> bool:
        starts = self._starts.get(family)
        if not starts:
            return False
        i = bisect.bisect_right(starts, first) - 1
        return i >= 0 and self._reach[family][i] >= last


class _PortCover:
    """Answers "does one element hold all of these addresses x protocol x ports?" for any set
    of flattened `PeerPort`s: per (family, protocol), elements sorted by first address with the
    running maximum of last addresses; a query walks back from the last element starting at
    or before its first address while that maximum still reaches its last address. On
    canonical (disjoint) elements that walk stops after the few elements of one address run."""

    def __init__(self, elements: Iterable[tuple[int, int, int, int, int, int]]) -> None:
        groups: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}
        for family, first, last, protocol, port_first, port_last in elements:
            groups.setdefault((family, protocol), []).append((first, last, port_first, port_last))
        self._groups: dict[tuple[int, int], tuple[list[tuple[int, int, int, int]], list[int]]]
        self._groups = {}
        for group_key, members in groups.items():
            members.sort()
            reach: list[int] = []
            for member in members:
                reach.append(max(member[1], reach[-1]) if reach else member[1])
            self._groups[group_key] = (members, reach)

    def holds(
        self, family: int, first: int, last: int, protocol: int, port_first: int, port_last: int
    ) -> bool:
        group = self._groups.get((family, protocol))
        if group is None:
            return False
        members, reach = group
        i = bisect.bisect_right(members, (first, 1 << 129, 1 << 17, 1 << 17)) - 1
        while i >= 0 and reach[i] >= last:
            _, member_last, member_port_first, member_port_last = members[i]
            if (
                member_last >= last
                and member_port_first <= port_first
                and port_last <= member_port_last
            ):
                return True
            i -= 1
        return False


def _removes_allows_reference(old: ruleset.PodRuleset | None, new: ruleset.PodRuleset) -> bool:
    """The straightforward pairwise form of `removes_allows` (quadratic): the specification
    its fast form is tested against."""
    if old is None:
        return True
    if new.quarantine is not None and new.quarantine != old.quarantine:
        return True
    if new.node_guard is not None and _guards_more(old.node_guard, new.node_guard):
        return True
    for before, after in ((old.ingress, new.ingress), (old.egress, new.egress)):
        if _tiers_may_narrow(before, after):
            return True
        if not after.isolated:
            continue
        if not before.isolated:
            return True
        for r in before.any_port_peers:
            if not _covered(after.any_port_peers, r):
                return True
        for e in before.port_peers:
            if _covered(after.any_port_peers, e.addrs):
                continue
            if not any(
                n.protocol == e.protocol
                and n.addrs.family == e.addrs.family
                and n.addrs.first <= e.addrs.first
                and e.addrs.last <= n.addrs.last
                and n.ports.first <= e.ports.first
                and e.ports.last <= n.ports.last
                for n in after.port_peers
            ):
                return True
    return False


def _guards_more(old: ruleset.NodeGuard | None, new: ruleset.NodeGuard) -> bool:
    """Whether `new` blocks something `old` did not (a node removed blocks less)."""
    if old is None:
        return True
    if not all(_covered(old.blocked, r) for r in new.blocked):
        return True
    if not all(_covered(old.node_addrs, r) for r in new.node_addrs):
        return True
    return not all(
        any(
            o.protocol == n.protocol
            and o.ports.first <= n.ports.first <= n.ports.last <= o.ports.last
            for o in old.ports
        )
        for n in new.ports
    )


def _covered(ranges: Sequence[ruleset.AddrRange], r: ruleset.AddrRange) -> bool:
    """Whether one canonical (merged) range of `ranges` holds all of `r`."""
    return any(c.family == r.family and c.first <= r.first and r.last <= c.last for c in ranges)
