"""The agent's mirror of the cluster: every pod, namespace, policy and Service, as model objects.

All pods are kept, cluster-wide, because any of them can be a peer of a local pod. The store
applies watch events and relists (a relist replaces a kind's content, so deletes missed while
disconnected are caught) and remembers which kinds have completed their first LIST.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from agent import model
from agent.calc import affected as calc_affected
from agent.calc import index as calc_index
from agent.k8s import convert, watch

KINDS = ("nodes", "namespaces", "pods", "networkpolicies", "services", "endpointslices")


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name')}" if namespace else str(meta.get("name"))


@dataclasses.dataclass
class Change:
    """What one batch of events touched: per kind, changed keys -> version before the batch."""

    pods: dict[str, model.Pod | None] = dataclasses.field(default_factory=dict)
    namespaces: dict[str, model.Namespace | None] = dataclasses.field(default_factory=dict)
    policies: dict[str, model.NetworkPolicy | None] = dataclasses.field(default_factory=dict)
    nodes: dict[str, model.Node | None] = dataclasses.field(default_factory=dict)
    relisted: bool = False
    services: dict[str, model.Service | None] = dataclasses.field(default_factory=dict)
    endpointslices: dict[str, model.EndpointSlice | None] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(
            self.pods
            or self.namespaces
            or self.policies
            or self.nodes
            or self.relisted
            or self.services
            or self.endpointslices
        )


class Store:
    def __init__(self) -> None:
        self.pods: dict[str, model.Pod] = {}
        self.namespaces: dict[str, model.Namespace] = {}
        self.policies: dict[str, model.NetworkPolicy] = {}
        self.nodes: dict[str, model.Node] = {}
        self.services: dict[str, model.Service] = {}
        self.endpointslices: dict[str, model.EndpointSlice] = {}
        self.synced: set[str] = set()
        self._policy_index: calc_index.PolicyIndex | None = None

    @property
    def in_sync(self) -> bool:
        return self.synced.issuperset(KINDS)

    def _table(self, resource: str) -> dict[str, Any]:
        tables: dict[str, dict[str, Any]] = {
            "pods": self.pods,
            "namespaces": self.namespaces,
            "networkpolicies": self.policies,
            "nodes": self.nodes,
            "services": self.services,
            "endpointslices": self.endpointslices,
        }
        return tables[resource]

    @staticmethod
    def _convert(resource: str, obj: Mapping[str, Any]) -> Any:
        if resource == "pods":
            return convert.pod(obj)
        if resource == "namespaces":
            return convert.namespace(obj)
        if resource == "nodes":
            return convert.node(obj)
        if resource == "services":
            return convert.service(obj)
        if resource == "endpointslices":
            return convert.endpoint_slice(obj)
        return convert.network_policy(obj)

    def _mark(self, change: Change, resource: str, key: str, old: Any) -> None:
        olds: dict[str, Any]
        if resource == "pods":
            olds = change.pods
        elif resource == "namespaces":
            olds = change.namespaces
        elif resource == "nodes":
            olds = change.nodes
        elif resource == "services":
            olds = change.services
        elif resource == "endpointslices":
            olds = change.endpointslices
        else:
            olds = change.policies
        olds.setdefault(key, old)

    def affected_changes(self, change: Change) -> calc_affected.Changes:
        """What a batch changed (`change`, applied to this store), old and new side by side,
        as `agent.calc.affected` takes it. A Node change counts as a relist: it may move
        every pod's node addresses and node guard."""
        return calc_affected.Changes(
            pods={k: (old, self.pods.get(k)) for k, old in change.pods.items()},
            policies={k: (old, self.policies.get(k)) for k, old in change.policies.items()},
            namespaces_changed=bool(change.namespaces or change.nodes),
            relisted=change.relisted or bool(change.nodes),
            services_changed=bool(change.services or change.endpointslices),
            namespaces={k: (old, self.namespaces.get(k)) for k, old in change.namespaces.items()},
        )

    def apply(self, item: watch.WatchEvent | watch.Relist, change: Change) -> None:
        if item.resource == "networkpolicies":
            self._policy_index = None
        table = self._table(item.resource)
        if isinstance(item, watch.Relist):
            fresh = {_key(obj): self._convert(item.resource, obj) for obj in item.items}
            for key in set(table) | set(fresh):
                if table.get(key) != fresh.get(key):
                    self._mark(change, item.resource, key, table.get(key))
                    change.relisted = True
            table.clear()
            table.update(fresh)
            self.synced.add(item.resource)
            return
        key = _key(item.obj)
        if item.type == "DELETED":
            old = table.pop(key, None)
            if old is not None:
                self._mark(change, item.resource, key, old)
            return
        converted = self._convert(item.resource, item.obj)
        if table.get(key) != converted:
            self._mark(change, item.resource, key, table.get(key))
            table[key] = converted

    def policies_in(self, namespace: str) -> list[model.NetworkPolicy]:
        return [p for p in self.policies.values() if p.namespace == namespace]

    def policy_index(self) -> calc_index.PolicyIndex:
        """The policies by namespace and matchLabels pair, kept until the next policy change:
        a pod's candidates cost O(policies that could match), not O(all policies)."""
        if self._policy_index is None:
            self._policy_index = calc_index.PolicyIndex.build(self.policies.values())
        return self._policy_index

    def policies_for(self, pod: model.Pod) -> list[model.NetworkPolicy]:
        """The policies that may select `pod` (a superset; `compile` checks each)."""
        return self.policy_index().candidates(pod)
