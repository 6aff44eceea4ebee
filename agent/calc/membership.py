"""Which peer pods each selector in use holds, kept up to date per pod and namespace change.
Pure.

Why: the incremental calculator needs, for a changed pod or namespace, the membership delta
of every selector local pods refer to ("pod X left S, joined T") rather than a fresh
resolution of every selector. Only selectors some local pod refers to are kept (reference
counted); a new one is resolved once from the pods of the namespaces it can reach.
Semantics are those of `agent.calc.compile`: peers are `compile.is_peer_candidate` pods, and a
namespaceSelector sees the implicit `kubernetes.io/metadata.name` label.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from agent import model, selectors
from agent.calc import compile as calc_compile
from agent.calc import terms

PeerPod = calc_compile.PeerPod
# One membership change: (source, the member before or None, the member after or None).
Delta = tuple[terms.Source, PeerPod | None, PeerPod | None]


class Memberships:
    """Peer pods by namespace, and the members of every source in use."""

    def __init__(self) -> None:
        self.namespaces: dict[str, model.Namespace] = {}
        self.by_namespace: dict[str, dict[str, PeerPod]] = {}
        self.members: dict[terms.Source, dict[str, PeerPod]] = {}
        self.users: dict[terms.Source, int] = {}
        self.by_pod_namespace: dict[str, set[terms.Source]] = {}  # `pods` sources
        self.wide: set[terms.Source] = set()  # `namespaces` and `all` sources
        self._labels: dict[str, dict[str, str]] = {}

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
                self.wide.add(source)
            members = self.members[source] = {
                key: peer
                for namespace in scope
                for key, peer in self.by_namespace.get(namespace, {}).items()
                if self.holds(source, peer)
            }
        return members

    def release(self, source: terms.Source) -> None:
        """Stop following `source` once nothing uses it."""
        left = self.users[source] - 1
        if left:
            self.users[source] = left
            return
        del self.users[source], self.members[source]
        self.wide.discard(source)
        same = self.by_pod_namespace.get(source.namespace)
        if same is not None:
            same.discard(source)

    def set_pod(self, key: str, pod: model.Pod | None) -> list[Delta]:
        """Record a pod's new version (None: deleted); the membership changes it makes."""
        namespace = key.split("/", 1)[0]
        peer = calc_compile.peer_pod(pod) if pod is not None else None
        pods = self.by_namespace.setdefault(namespace, {})
        old = pods.pop(key, None)
        if peer is not None:
            pods[key] = peer
        elif not pods:
            del self.by_namespace[namespace]
        if old is None and peer is None:
            return []
        out: list[Delta] = []
        for source in (*self.by_pod_namespace.get(namespace, ()), *self.wide):
            members = self.members[source]
            was = members.pop(key, None)
            now = peer if peer is not None and self.holds(source, peer) else None
            if now is not None:
                members[key] = now
            if was is not None or now is not None:
                out.append((source, was, now))
        return out

    def set_namespace(self, name: str, namespace: model.Namespace | None) -> list[Delta]:
        """Record a namespace's new version; the membership changes of its pods."""
        if namespace is None:
            self.namespaces.pop(name, None)
        else:
            self.namespaces[name] = namespace
        self._labels.pop(name, None)
        return list(self._recheck(name))

    def _recheck(self, name: str) -> Iterator[Delta]:
        pods = self.by_namespace.get(name, {})
        for source in self.wide:
            if source.kind != "namespaces":
                continue
            members = self.members[source]
            for key, peer in pods.items():
                was = members.pop(key, None)
                now = peer if self.holds(source, peer) else None
                if now is not None:
                    members[key] = now
                if (was is None) != (now is None):
                    yield source, was, now
