"""Whether a pod's ruleset admits one connection, evaluated like the kernel program does. Pure.

Strict mode and quarantine cut established connections that the current ruleset no longer
allows: the worker lists the pod namespace's conntrack entries, and `illegal` picks the ones to
delete. The evaluation mirrors `render_nft`: quarantine first (only forensic sources, and the
pod's replies to them), then the node guard (egress only), then the direction's policy sets.
A connection is judged by its original direction: the pod is its destination (ingress, the
peer is the source) or its source (egress, the peer is the destination). Loopback entries and
entries not involving the pod's addresses are left alone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agent.policy import intervals, ruleset

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
    if not d.isolated:
        return True
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


def illegal(
    rs: ruleset.PodRuleset, pod_ips: Iterable[str], entries: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The conntrack entries (worker `conntrack_list` form) that `rs` does not allow."""
    own = {str(ipaddress.ip_address(ip)) for ip in pod_ips}
    out = []
    for entry in entries:
        src, dst = str(entry.get("src")), str(entry.get("dst"))
        proto = int(entry.get("proto") or 0)
        dport = entry.get("dport")
        port = int(dport) if dport is not None and proto in _PORTED else None
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
    """
    if old is None:
        return True
    if new.quarantine is not None and new.quarantine != old.quarantine:
        return True
    if new.node_guard is not None and _guards_more(old.node_guard, new.node_guard):
        return True
    for before, after in ((old.ingress, new.ingress), (old.egress, new.egress)):
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
