"""Frozen snapshots of the Kubernetes objects podseg reasons about.

The pure core (selectors, policy compilation, rendering) works only on these types, never on
raw API dictionaries; `agent.k8s.convert` is the single place that builds them. Everything here
is immutable so a snapshot can be shared between the store and the compiler without copies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclasses.dataclass(frozen=True)
class SelectorRequirement:
    """One `matchExpressions` entry: key, operator (In, NotIn, Exists, DoesNotExist), values."""

    key: str
    operator: str
    values: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes label selector; the empty selector matches everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[SelectorRequirement, ...] = ()


@dataclasses.dataclass(frozen=True)
class ContainerPort:
    """A declared container port; `name` is what named policy ports resolve against."""

    port: int
    protocol: str = "TCP"
    name: str | None = None


@dataclasses.dataclass(frozen=True)
class Pod:
    """A pod as seen by the agent: a peer everywhere, a managed target on its own node."""

    namespace: str
    name: str
    uid: str = ""
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    node_name: str | None = None
    host_network: bool = False
    ips: tuple[str, ...] = ()
    container_ports: tuple[ContainerPort, ...] = ()
    phase: str = ""
    terminating: bool = False
    resource_version: str = ""
    # The owning workload's name (Deployment, StatefulSet, DaemonSet, Job, ...) derived from
    # ownerReferences by `agent.k8s.convert.workload_of`; "" for a bare pod (never its name).
    workload: str = ""
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # The owning workload's kind (Deployment for a ReplicaSet of a Deployment, StatefulSet,
    # DaemonSet, Job, ...; `agent.k8s.convert.workload_kind_of`); "" for a bare pod.
    workload_kind: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True)
class Namespace:
    """A namespace: only its name and labels matter for policy."""

    name: str
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    resource_version: str = ""


@dataclasses.dataclass(frozen=True)
class Node:
    """A node: its addresses are where "traffic from the pod's node" comes from."""

    name: str
    addresses: tuple[str, ...] = ()
    # What a ClusterNetworkPolicy `nodes` peer selects on.
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Not compared: kubelets update Node status all the time; only the addresses matter here,
    # so a status-only update is no change (no recompile of every local pod).
    resource_version: str = dataclasses.field(default="", compare=False)


@dataclasses.dataclass(frozen=True)
class IPBlock:
    """`ipBlock`: a CIDR minus its exceptions (both already validated and normalized)."""

    cidr: str
    excepts: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Peer:
    """One `from`/`to` entry.

    Exactly one of: pod and/or namespace selector, or ip_block. `invalid` marks an entry that
    failed validation: it matches nothing, so a broken peer can never widen a rule (an empty
    peer list means "everyone", so dropping the entry instead would open the rule up).
    """

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None
    invalid: bool = False


@dataclasses.dataclass(frozen=True)
class PolicyPort:
    """One `ports` entry. `port` None means all ports of the protocol; str is a named port.

    `invalid` marks an entry that failed validation: it matches nothing.
    """

    protocol: str = "TCP"
    port: int | str | None = None
    end_port: int | None = None
    invalid: bool = False


@dataclasses.dataclass(frozen=True)
class PolicyRule:
    """An ingress or egress rule. Empty `peers` = all peers; empty `ports` = all ports."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()


@dataclasses.dataclass(frozen=True)
class NetworkPolicy:
    """A networking.k8s.io/v1 NetworkPolicy with `policyTypes` defaults already resolved.

    `errors` lists what was invalid in the API object (each invalid part is kept as an entry
    that matches nothing). `pod_selector` None means the selector itself was malformed: the
    policy then selects no pod.
    """

    namespace: str
    name: str
    pod_selector: LabelSelector | None = dataclasses.field(default_factory=LabelSelector)
    ingress: tuple[PolicyRule, ...] = ()
    egress: tuple[PolicyRule, ...] = ()
    policy_types: tuple[str, ...] = ("Ingress",)
    errors: tuple[str, ...] = ()
    resource_version: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def isolates_ingress(self) -> bool:
        return "Ingress" in self.policy_types

    @property
    def isolates_egress(self) -> bool:
        return "Egress" in self.policy_types


@dataclasses.dataclass(frozen=True)
class ServicePort:
    """One `spec.ports` entry: what clients dial (`port`) and where it goes (`target_port`).

    `target_port` is a number or a container-port name; EndpointSlices carry the number it
    resolved to on each backend, matched to this entry by `name` and `protocol`.
    """

    port: int
    protocol: str = "TCP"
    name: str = ""
    target_port: int | str | None = None


@dataclasses.dataclass(frozen=True)
class Service:
    """A v1 Service: the virtual addresses a client may send to instead of a backend pod.

    `cluster_ips` holds one ClusterIP per IP family (none for headless or ExternalName
    Services); `external_ips` are `spec.externalIPs` plus `status.loadBalancer.ingress[].ip`.
    `selector` None means a Service without selector (endpoints managed by hand).
    """

    namespace: str
    name: str
    type: str = "ClusterIP"
    cluster_ips: tuple[str, ...] = ()
    external_ips: tuple[str, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    selector: Mapping[str, str] | None = None
    headless: bool = False
    internal_traffic_local: bool = False
    errors: tuple[str, ...] = ()
    resource_version: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True)
class EndpointPort:
    """One EndpointSlice port: the backend port number a Service port resolved to."""

    port: int | None
    protocol: str = "TCP"
    name: str = ""


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One backend of a slice: its addresses, readiness, node and the pod it names (if any)."""

    addresses: tuple[str, ...]
    ready: bool = True
    node_name: str | None = None
    target_pod: str | None = None  # "namespace/name" when targetRef is a Pod


@dataclasses.dataclass(frozen=True)
class EndpointSlice:
    """A discovery.k8s.io/v1 EndpointSlice of one Service (`service` is its name, "" if none)."""

    namespace: str
    name: str
    service: str = ""
    address_type: str = "IPv4"
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[EndpointPort, ...] = ()
    errors: tuple[str, ...] = ()
    resource_version: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"
