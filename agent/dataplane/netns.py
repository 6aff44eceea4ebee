"""Finding a pod's network namespaces by its IP addresses, never through CNI-specific files.

The dataplane worker scans candidate namespaces (named ones in `--netns-dir`, then process
namespaces under /proc) and reports their interface addresses and routes; this module turns a
scan into an index from address to namespaces, and places every local pod. It is pure so the
placement rules are unit-tested:

* A namespace *holds* a pod when every one of the pod's IPs sits on its interfaces.
* Every namespace holding a pod gets the pod's ruleset. Any process able to put a pod's
  addresses into a namespace of its own (a decoy) could otherwise keep the pod unenforced by
  making its addresses ambiguous; programming every holder keeps the real one enforced (the
  decoy gets the same, harmless, ruleset). podseg cannot tell the runtime's namespace from a
  decoy: it never reads CNI or runtime state, and a decoy can copy names and addresses.
* A namespace that holds (or held, in this agent's run) several pods is *contested*: at least
  one of them is an impostor, and giving it any one pod's ruleset could hand a pod another pod's
  allows (a quarantined pod that takes a peer's address would escape its quarantine). It gets a
  lockdown ruleset instead, programmed by one claimant (the first by key).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Interface:
    name: str
    addrs: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Route:
    """A unicast route of a namespace's main table: `dst` (prefix/len) through `interface`,
    via next hop `gateway` (None: on-link)."""

    dst: str
    gateway: str | None
    interface: str


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One namespace as the worker saw it: a path to enter it and its inode to verify it."""

    path: str
    ino: int
    interfaces: tuple[Interface, ...]
    routes: tuple[Route, ...] = ()


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a pod's ruleset goes: the namespace and the interfaces that carry the pod's IPs,
    with what the scan saw there that the ruleset depends on: the IPv6 link-local addresses
    of those interfaces and the routes through them."""

    path: str
    ino: int
    interfaces: tuple[str, ...]
    link_local: tuple[str, ...] = ()
    routes: tuple[Route, ...] = ()

    @property
    def ident(self) -> tuple[str, int]:
        return self.path, self.ino


@dataclasses.dataclass(frozen=True)
class Placement:
    """One namespace a pod's rules go to; `lockdown`: it is contested (see the module)."""

    target: Target
    lockdown: bool = False


def candidates_from_scan(raw: Sequence[Mapping[str, Any]]) -> list[Candidate]:
    return [
        Candidate(
            path=str(item["path"]),
            ino=int(item["ino"]),
            interfaces=tuple(
                Interface(name=str(i["name"]), addrs=tuple(str(a) for a in i["addrs"]))
                for i in item["interfaces"]
            ),
        )
        for item in raw
    ]


def _norm(ip: str) -> str:
    return str(ipaddress.ip_address(ip))


def _link_local(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_link_local and ":" in addr
    except ValueError:
        return False


def target_of(cand: Candidate, interfaces: Iterable[str]) -> Target:
    """`cand` as a target whose rules hook `interfaces`, with the facts the scan saw there."""
    names = tuple(sorted(set(interfaces)))
    link_local = sorted(
        {_norm(a) for i in cand.interfaces if i.name in names for a in i.addrs if _link_local(a)}
    )
    routes = tuple(sorted({r for r in cand.routes if r.interface in names}, key=_route_key))
    return Target(cand.path, cand.ino, names, tuple(link_local), routes)


def _route_key(route: Route) -> tuple[str, str, str]:
    return route.dst, route.gateway or "", route.interface


class Index:
    """Address -> the namespaces (and interface) holding it, built from one scan."""

    def __init__(self, candidates: Iterable[Candidate]) -> None:
        self._holders: dict[str, dict[tuple[str, int], str]] = {}
        self._candidates: dict[tuple[str, int], Candidate] = {}
        for cand in candidates:
            self._candidates[(cand.path, cand.ino)] = cand
            for iface in cand.interfaces:
                for addr in iface.addrs:
                    self._holders.setdefault(_norm(addr), {})[(cand.path, cand.ino)] = iface.name
        self.ambiguous = frozenset(a for a, held in self._holders.items() if len(held) > 1)

    def __contains__(self, ident: tuple[str, int]) -> bool:
        return ident in self._candidates

    def holders(self, pod_ips: Sequence[str]) -> tuple[Target, ...]:
        """Every namespace holding all of `pod_ips` (by path), each with the interfaces that
        carry them; none for no IPs."""
        if not pod_ips:
            return ()
        hits = [self._holders.get(_norm(ip), {}) for ip in pod_ips]
        common = set(hits[0]).intersection(*hits[1:])
        return tuple(
            target_of(self._candidates[ident], (hit[ident] for hit in hits))
            for ident in sorted(common)
        )

    def find(self, pod_ips: Sequence[str]) -> Target | None:
        """The one namespace holding all of `pod_ips`; None when none or several do."""
        found = self.holders(pod_ips)
        return found[0] if len(found) == 1 else None

    def whole(self, ident: tuple[str, int], interfaces: Iterable[str] = ()) -> Target:
        """The namespace `ident` as a target: on `interfaces` where it still has them, else on
        every interface holding an address."""
        cand = self._candidates[ident]
        present = {i.name for i in cand.interfaces}
        chosen = [name for name in interfaces if name in present]
        return target_of(cand, chosen or present)


def place(
    index: Index,
    pods: Mapping[str, Sequence[str]],
    held: Mapping[str, Collection[Target]] | None = None,
) -> dict[str, tuple[Placement, ...]]:
    """Where each pod's rules go (`pods`: key -> IPs of the local pods that run): every
    namespace holding the pod, plus those it was placed in before (`held`) that still exist.
    A namespace claimed by several pods is a lockdown placement of the first of them."""
    held = held or {}
    claims: dict[tuple[str, int], dict[str, Target]] = {}
    for key in sorted(pods):
        for target in index.holders(pods[key]):
            claims.setdefault(target.ident, {})[key] = target
        for before in held.get(key, ()):
            if before.ident in index and key not in claims.get(before.ident, {}):
                target = index.whole(before.ident, before.interfaces)
                claims.setdefault(before.ident, {})[key] = target
    placed: dict[str, list[Placement]] = {key: [] for key in pods}
    for ident, claimants in claims.items():
        first = min(claimants)
        if len(claimants) == 1:
            placed[first].append(Placement(claimants[first]))
        else:
            placed[first].append(Placement(index.whole(ident), lockdown=True))
    return {key: tuple(sorted(p, key=lambda x: x.target.ident)) for key, p in placed.items()}
