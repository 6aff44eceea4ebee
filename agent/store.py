"""The agent's mirror of the cluster: every pod, namespace, policy and Service, as model objects,
and the admin policies (ClusterNetworkPolicy, ANP, BANP) of the kinds the cluster serves.

All pods are kept, cluster-wide, because any of them can be a peer of a local pod. The store
applies watch events and relists (a relist replaces a kind's content, so deletes missed while
disconnected are caught) and remembers which kinds have completed their first LIST.

An object the agent cannot read (a malformed shape from a buggy client or server) never stops
the agent: it is reported once per version (log line, `podseg_malformed_objects_total`) and
the store keeps the object's last readable version (or, for a new object, leaves it out), so
one odd object can neither crash every node's agent nor make a pod look deleted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import structlog

from agent import metrics, model
from agent.calc import affected as calc_affected
from agent.calc import index as calc_index
from agent.k8s import convert, rest, watch
from agent.tiers import convert as tiers_convert
from agent.tiers import model as tiers

log = structlog.get_logger(__name__)

KINDS = ("nodes", "namespaces", "pods", "networkpolicies", "services", "endpointslices")
# The network-policy-api kinds: mirrored only while the cluster serves them (`expect_admin`).
ADMIN_KINDS = tuple(rest.ADMIN_PATHS)
_ADMIN_CONVERT = {
    "clusternetworkpolicies": tiers_convert.cluster_network_policy,
    "adminnetworkpolicies": tiers_convert.admin_network_policy,
    "baselineadminnetworkpolicies": tiers_convert.baseline_admin_network_policy,
}
# The pseudo-resource of the events `agent.cni` queues: a sandbox the CNI plugin announced.
CNI = "cni"
MAX_CNI_HINTS = 4096  # hints of pods the API has not shown (yet) are bounded


@dataclasses.dataclass(frozen=True)
class CniHint:
    """What podseg-cni reported of a new pod's sandbox, before the API shows its IPs: its
    addresses and the path of its network namespace (`agent.cni`)."""

    ips: tuple[str, ...]
    netns: str
    container_id: str = ""


def with_hint(pod: model.Pod, hint: CniHint | None) -> model.Pod:
    """`pod` with the plugin's IPs while the API reports none (its labels as the API has them)."""
    if hint is None or pod.ips:
        return pod
    return dataclasses.replace(pod, ips=hint.ips)


def _key(obj: Any) -> str | None:
    """`<namespace>/<name>` (or `<name>` for cluster-scoped kinds); None when unreadable."""
    if isinstance(obj, model.Pod):  # decoded typed (agent.k8s.podwire): keyed alike
        return obj.key
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        return None
    namespace = meta.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        return None
    return f"{namespace}/{meta['name']}" if namespace else str(meta["name"])


def _version(obj: Any) -> str:
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    return str(meta.get("resourceVersion") or "") if isinstance(meta, Mapping) else ""


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
    # Admin policies (ClusterNetworkPolicy, ANP, BANP), keyed `<resource>/<name>`.
    admin: dict[str, tiers.ClusterPolicy | None] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(
            self.admin
            or self.pods
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
        # Per admin kind, name -> policy; `admin_expected`: the kinds the cluster serves (their
        # first LIST is part of being in sync; the objects of any other admin kind are dropped).
        self.admin: dict[str, dict[str, tiers.ClusterPolicy]] = {k: {} for k in ADMIN_KINDS}
        self.admin_expected: set[str] = set()
        # False until the first discovery of the admin kinds answered (agent.k8s.adminwatch).
        self.admin_known = True
        self.synced: set[str] = set()
        self._policy_index: calc_index.PolicyIndex | None = None
        self._malformed: set[tuple[str, str, str]] = set()  # reported (resource, key, version)
        self.cni_hints: dict[str, CniHint] = {}  # pod key -> what podseg-cni reported

    @property
    def in_sync(self) -> bool:
        return (
            self.admin_known
            and self.synced.issuperset(KINDS)
            and self.synced.issuperset(self.admin_expected)
        )

    def expect_admin(self, resource: str) -> None:
        """The cluster serves admin kind `resource`: its reflector starts now, and the store is
        in sync again only after that kind's first LIST."""
        self.admin_expected.add(resource)
        self.synced.discard(resource)

    def forget_admin(self, resource: str) -> None:
        """The cluster no longer serves admin kind `resource`: the next item for it (any, for
        instance an empty relist) drops its policies."""
        self.admin_expected.discard(resource)
        self.synced.discard(resource)

    def admin_policies(self) -> list[tiers.ClusterPolicy]:
        """Every admin policy of the served kinds, in evaluation order (tier, priority, ...)."""
        return sorted(
            (p for table in self.admin.values() for p in table.values()), key=lambda p: p.order
        )

    def _table(self, resource: str) -> dict[str, Any]:
        if resource in self.admin:
            return self.admin[resource]
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
        if resource in _ADMIN_CONVERT:
            return _ADMIN_CONVERT[resource](obj)
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
        if resource in self.admin:
            change.admin.setdefault(f"{resource}/{key}", old)
            return
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
            # An admin policy change recompiles every local pod (any may be a subject or a peer).
            relisted=change.relisted or bool(change.nodes) or bool(change.admin),
            services_changed=bool(change.services or change.endpointslices),
            namespaces={k: (old, self.namespaces.get(k)) for k, old in change.namespaces.items()},
        )

    def _read(self, resource: str, obj: Any) -> tuple[str, Any] | None:
        """(key, model object), or None for an object that cannot be read (reported once per
        version; the caller keeps what it had)."""
        if isinstance(obj, model.Pod):  # already converted (agent.k8s.podwire)
            return obj.key, obj
        key = _key(obj)
        try:
            if key is None or not isinstance(obj, Mapping):
                raise ValueError("no readable metadata.name")
            return key, self._convert(resource, obj)
        except Exception as exc:  # any shape the converter did not foresee
            marker = (resource, key or "?", _version(obj))
            if marker not in self._malformed:
                self._malformed.add(marker)
                metrics.MALFORMED_OBJECTS.labels(resource).inc()
                log.warning(
                    "object_malformed",
                    resource=resource,
                    object=key or "?",
                    resource_version=marker[2],
                    error=f"{type(exc).__name__}: {exc}",
                    effect="ignored; the last readable version (if any) stays in effect",
                )
            return None

    def hint(self, key: str, hint: CniHint, change: Change) -> None:
        """Take podseg-cni's report of pod `key`'s sandbox: a known pod without IPs in the API
        gets the plugin's (and is planned); a pod not seen yet gets them when it arrives."""
        if key not in self.cni_hints and len(self.cni_hints) >= MAX_CNI_HINTS:
            self.cni_hints.pop(next(iter(self.cni_hints)))
        self.cni_hints[key] = hint
        pod = self.pods.get(key)
        if pod is not None and not pod.ips:
            self._mark(change, "pods", key, pod)
            self.pods[key] = with_hint(pod, hint)

    def _hinted(self, resource: str, key: str, converted: Any) -> Any:
        if resource != "pods" or key not in self.cni_hints:
            return converted
        if converted.ips:  # the API reports the pod's IPs now: the hint has served
            del self.cni_hints[key]
            return converted
        return with_hint(converted, self.cni_hints[key])

    def apply(self, item: watch.WatchEvent | watch.Relist, change: Change) -> None:
        if item.resource == CNI and isinstance(item, watch.WatchEvent):
            obj = item.obj
            assert isinstance(obj, dict)  # agent.cni queues its reports as dicts
            hint = CniHint(tuple(obj["ips"]), str(obj["netns"]), str(obj.get("containerId", "")))
            self.hint(str(obj["key"]), hint, change)
            return
        if item.resource == "networkpolicies":
            self._policy_index = None
        table = self._table(item.resource)
        if item.resource in self.admin and item.resource not in self.admin_expected:
            # A kind no longer served (or a late item of its stopped reflector): its policies go.
            for name in list(table):
                self._mark(change, item.resource, name, table.pop(name))
            return
        if isinstance(item, watch.Relist):
            fresh: dict[str, Any] = {}
            for obj in item.items:
                read = self._read(item.resource, obj)
                if read is not None:
                    fresh[read[0]] = self._hinted(item.resource, *read)
                elif (key := _key(obj)) is not None and key in table:
                    fresh[key] = table[key]  # keep the last readable version
            for key in set(table) | set(fresh):
                if table.get(key) != fresh.get(key):
                    self._mark(change, item.resource, key, table.get(key))
                    change.relisted = True
            table.clear()
            table.update(fresh)
            self.synced.add(item.resource)
            return
        if item.type == "DELETED":
            gone = _key(item.obj)
            old = table.pop(gone, None) if gone is not None else None
            if gone is not None and old is not None:
                self._mark(change, item.resource, gone, old)
            if item.resource == "pods" and gone is not None:
                self.cni_hints.pop(gone, None)
            return
        read = self._read(item.resource, item.obj)
        if read is None:
            return  # the last readable version (if any) stays
        key, converted = read
        converted = self._hinted(item.resource, key, converted)
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
