"""Finding a pod's network namespace by its IP addresses, never through CNI-specific files.

The dataplane worker scans candidate namespaces (named ones in `--netns-dir`, then process
namespaces under /proc) and reports their interface addresses; this module turns a scan into
an index from address to namespace. It is pure so the matching rules are unit-tested: a pod is
found only when every one of its IPs sits in the same namespace, and an address that shows up
in two namespaces is ambiguous and matches nothing (programming the wrong namespace would be
worse than programming none).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Interface:
    name: str
    addrs: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One namespace as the worker saw it: a path to enter it and its inode to verify it."""

    path: str
    ino: int
    interfaces: tuple[Interface, ...]


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a pod's ruleset goes: the namespace and the interfaces that carry the pod's IPs."""

    path: str
    ino: int
    interfaces: tuple[str, ...]


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


class Index:
    """Address -> (namespace, interface) built from one scan."""

    def __init__(self, candidates: Iterable[Candidate]) -> None:
        self._by_addr: dict[str, tuple[Candidate, str]] = {}
        ambiguous: set[str] = set()
        for cand in candidates:
            for iface in cand.interfaces:
                for addr in iface.addrs:
                    key = _norm(addr)
                    other = self._by_addr.get(key)
                    if other is not None and other[0].ino != cand.ino:
                        ambiguous.add(key)
                    self._by_addr[key] = (cand, iface.name)
        for key in ambiguous:
            del self._by_addr[key]
        self.ambiguous = frozenset(ambiguous)

    def find(self, pod_ips: Sequence[str]) -> Target | None:
        """The namespace holding all of `pod_ips`, or None if absent, split or ambiguous."""
        if not pod_ips:
            return None
        hits = [self._by_addr.get(_norm(ip)) for ip in pod_ips]
        if any(hit is None for hit in hits):
            return None
        cands = {hit[0].ino: hit[0] for hit in hits if hit is not None}
        if len(cands) != 1:
            return None
        cand = next(iter(cands.values()))
        names = sorted({hit[1] for hit in hits if hit is not None})
        return Target(path=cand.path, ino=cand.ino, interfaces=tuple(names))
