"""Which peer pods each selector in use holds, kept up to date per pod and namespace change.
Pure.

Why: the incremental calculator needs, for a changed pod or namespace, the membership delta
of every selector local pods refer to ("pod X left S, joined T") rather than a fresh
resolution of every selector. Only selectors some local pod refers to are kept (reference
counted); a new one is resolved once from the pods of the namespaces it can reach.
Peer pods are also indexed by address, so the pods behind a stretch of addresses are found
without scanning every member. Semantics are those of `agent.calc.compile`: peers are
`compile.is_peer_candidate` pods, and a namespaceSelector sees the implicit
`kubernetes.io/metadata.name` label.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping

from agent import model, selectors
from agent.calc import compile as calc_compile
from agent.calc import intervals, ruleset, terms

PeerPod = calc_compile.PeerPod
# One membership change: (source, the member before or None, the member after or None).
Delta = tuple[terms.Source, PeerPod | None, PeerPod | None]


class Memberships:
    """Peer pods by namespace, and the members of every source in use."""

    def __init__(self) -> None:
        self.namespaces: dict[str, model.Namespace] = {}
        self.by_namespace: dict[str, dict[str, PeerPod]] = {}
        self.peers: dict[str, PeerPod] = {}
        self.points: list[tuple[int, int, str]] = []  # sorted (family, address, pod key)
        self.wide: dict[str, PeerPod] = {}  # peers holding an address range (rare)
        self.members: dict[terms.Source, dict[str, PeerPod]] = {}
        self.users: dict[terms.Source, int] = {}
        self.by_pod_namespace: dict[str, set[terms.Source]] = {}  # `pods` sources
        self.broad: set[terms.Source] = set()  # `namespaces` and `all` sources
        self._labels: dict[str, dict[str, str]] = {}
        self._merged: dict[terms.Source, tuple[ruleset.AddrRange, ...]] = {}

    def labels(self, namespace: str) -> Mapping[str, str]:
        found = self._labels.get(namespace)
        if found is None:
            found = self._labels[namespace] = calc_compile.namespace_labels(
                namespace, self.namespaces
            )
        return found

    def holds(self, source: terms.Source, peer: PeerPod) -> bool:
        """Whether `peer` is a member of `source`."""
        pod = peer.pod
        if source.kind == "all":
            return True
        if source.kind == "pods":
            return (
                pod.namespace == source.namespace
                and source.pod_selector is not None
                and selectors.matches(source.pod_selector, pod.labels)
            )
        assert source.namespace_selector is not None
        return selectors.matches(source.namespace_selector, self.labels(pod.namespace)) and (
            source.pod_selector is None or selectors.matches(source.pod_selector, pod.labels)
        )

    def use(self, source: terms.Source) -> Mapping[str, PeerPod]:
        """Start (or keep) following `source`; its members."""
        self.users[source] = self.users.get(source, 0) + 1
        members = self.members.get(source)
        if members is None:
            if source.kind == "pods":
                scope = [source.namespace]
                self.by_pod_namespace.setdefault(source.namespace, set()).add(source)
            else:
                scope = list(self.by_namespace)
                self.broad.add(source)
            if source.namespace_selector is not None:  # one namespace test, not one per pod
                selector = source.namespace_selector
                scope = [ns for ns in scope if selectors.matches(selector, self.labels(ns))]
            members = self.members[source] = {
                key: peer
                for namespace in scope
                for key, peer in self.by_namespace.get(namespace, {}).items()
                if self.holds(source, peer)
            }
        return members

    def merged(self, source: terms.Source) -> tuple[ruleset.AddrRange, ...]:
        """The addresses of every member of `source`, canonical (kept until it changes):
        neighbouring pod addresses merge, so a fresh build handles ranges, not pods."""
        found = self._merged.get(source)
        if found is None:
            members = self.members[source].values()
            found = intervals.merge_addrs(a for peer in members for a in peer.addrs)
            self._merged[source] = found
        return found

    def release(self, source: terms.Source) -> None:
        """Stop following `source` once nothing uses it."""
        left = self.users[source] - 1
        if left:
            self.users[source] = left
            return
        del self.users[source], self.members[source]
        self._merged.pop(source, None)
        self.broad.discard(source)
        same = self.by_pod_namespace.get(source.namespace)
        if same is not None:
            same.discard(source)

    def set_pod(self, key: str, pod: model.Pod | None) -> list[Delta]:
        """Record a pod's new version (None: deleted); the membership changes it makes."""
        namespace = key.split("/", 1)[0]
        peer = calc_compile.peer_pod(pod) if pod is not None else None
        pods = self.by_namespace.setdefault(namespace, {})
        old = pods.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        if peer is not None:
            pods[key] = peer
            self._index(key, peer)
        elif not pods:
            del self.by_namespace[namespace]
        if old is None and peer is None:
            return []
        out: list[Delta] = []
        for source in (*self.by_pod_namespace.get(namespace, ()), *self.broad):
            members = self.members[source]
            was = members.pop(key, None)
            now = peer if peer is not None and self.holds(source, peer) else None
            if now is not None:
                members[key] = now
            if (was is None) != (now is None) or (was is not None and _moved(was, now)):
                out.append((source, was, now))
                self._merged.pop(source, None)
        return out

    def set_namespace(self, name: str, namespace: model.Namespace | None) -> list[Delta]:
        """Record a namespace's new version; the membership changes of its pods."""
        before = self.labels(name)
        if namespace is None:
            self.namespaces.pop(name, None)
        else:
            self.namespaces[name] = namespace
        self._labels.pop(name, None)
        return list(self._recheck(name, before))

    def _recheck(self, name: str, before: Mapping[str, str]) -> Iterator[Delta]:
        """The membership changes of the namespace's pods, now that its labels are no longer
        `before`: only in the sources whose namespace selector changed its verdict on it (the
        pods themselves did not change, so in the others every pod stays as it was)."""
        pods = self.by_namespace.get(name, {})
        after = self.labels(name)
        for source in self.broad:
            if source.kind != "namespaces":
                continue
            selector = source.namespace_selector
            assert selector is not None
            if selectors.matches(selector, before) == selectors.matches(selector, after):
                continue
            members = self.members[source]
            for key, peer in pods.items():
                was = members.pop(key, None)
                now = peer if self.holds(source, peer) else None
                if now is not None:
                    members[key] = now
                if (was is None) != (now is None):
                    self._merged.pop(source, None)
                    yield source, was, now

    def _index(self, key: str, peer: PeerPod) -> None:
        self.peers[key] = peer
        for a in peer.addrs:
            if a.first == a.last:
                bisect.insort(self.points, (a.family, a.first, key))
            else:
                self.wide[key] = peer

    def _unindex(self, key: str, peer: PeerPod) -> None:
        del self.peers[key]
        self.wide.pop(key, None)
        for a in peer.addrs:
            if a.first == a.last:
                del self.points[bisect.bisect_left(self.points, (a.family, a.first, key))]

    def within(self, family: int, low: int, high: int) -> Iterable[PeerPod]:
        """The peer pods with an address in [low, high] of `family` (a pod may come twice)."""
        start = bisect.bisect_left(self.points, (family, low, ""))
        end = bisect.bisect_left(self.points, (family, high + 1, ""))
        peers = self.peers
        out = [peers[key] for _, _, key in self.points[start:end]]
        for peer in self.wide.values():
            if any(a.family == family and a.first <= high and a.last >= low for a in peer.addrs):
                out.append(peer)
        return out

    def count_within(self, family: int, low: int, high: int) -> int:
        """How many single addresses of peer pods lie in [low, high] (wide ones not counted)."""
        start = bisect.bisect_left(self.points, (family, low, ""))
        return bisect.bisect_left(self.points, (family, high + 1, "")) - start


def _moved(was: PeerPod, now: PeerPod | None) -> bool:
    """Whether a member that stays gives other pieces: its addresses or container ports (egress
    named ports resolve on them) changed."""
    return (
        now is None or was.addrs != now.addrs or was.pod.container_ports != now.pod.container_ports
    )
