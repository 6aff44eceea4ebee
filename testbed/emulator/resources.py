"""The catalogue of API resources the emulator serves and how each one behaves.

Routing, discovery documents, error details, defaulting and validation all key off these
descriptors, so adding a resource type means adding one entry here (plus its rules).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ResourceType:
    """Static facts about one REST resource (one plural under one group/version)."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    # Subresources served besides the main resource (only "status" is implemented).
    subresources: tuple[str, ...] = ()
    # DELETE answers with the deleted object (registry ReturnDeletedObject) rather than a
    # Status; pods and services do this on the real server.
    return_deleted_object: bool = False
    # metadata.generation is maintained (bumped when anything outside metadata/status moves).
    has_generation: bool = False
    # Extra fieldSelector labels besides metadata.name / metadata.namespace.
    field_labels: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def qualified(self) -> str:
        """``pods`` or ``networkpolicies.networking.k8s.io`` as used in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """``Pod`` or ``NetworkPolicy.networking.k8s.io`` as used in Invalid messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)


ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

PODS = ResourceType(
    group="",
    version="v1",
    plural="pods",
    singular="pod",
    kind="Pod",
    namespaced=True,
    short_names=("po",),
    subresources=("status",),
    return_deleted_object=True,
    has_generation=True,
    field_labels=(
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
)
NAMESPACES = ResourceType(
    group="",
    version="v1",
    plural="namespaces",
    singular="namespace",
    kind="Namespace",
    namespaced=False,
    short_names=("ns",),
    subresources=("status",),
    field_labels=("status.phase",),
)
NODES = ResourceType(
    group="",
    version="v1",
    plural="nodes",
    singular="node",
    kind="Node",
    namespaced=False,
    short_names=("no",),
    subresources=("status",),
    field_labels=("spec.unschedulable",),
)
SERVICES = ResourceType(
    group="",
    version="v1",
    plural="services",
    singular="service",
    kind="Service",
    namespaced=True,
    short_names=("svc",),
    subresources=("status",),
    return_deleted_object=True,
    field_labels=("spec.clusterIP", "spec.type"),
)
EVENTS = ResourceType(
    group="",
    version="v1",
    plural="events",
    singular="event",
    kind="Event",
    namespaced=True,
    short_names=("ev",),
    field_labels=(
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
)
NETWORK_POLICIES = ResourceType(
    group="networking.k8s.io",
    version="v1",
    plural="networkpolicies",
    singular="networkpolicy",
    kind="NetworkPolicy",
    namespaced=True,
    short_names=("netpol",),
    has_generation=True,
)
ENDPOINT_SLICES = ResourceType(
    group="discovery.k8s.io",
    version="v1",
    plural="endpointslices",
    singular="endpointslice",
    kind="EndpointSlice",
    namespaced=True,
    has_generation=True,
)

LEASES = ResourceType(
    group="coordination.k8s.io",
    version="v1",
    plural="leases",
    singular="lease",
    kind="Lease",
    namespaced=True,
)

ALL: tuple[ResourceType, ...] = (
    PODS,
    NAMESPACES,
    NODES,
    SERVICES,
    EVENTS,
    NETWORK_POLICIES,
    ENDPOINT_SLICES,
    LEASES,
)

GROUP_VERSIONS: dict[str, str] = {
    "networking.k8s.io": "v1",
    "discovery.k8s.io": "v1",
    "coordination.k8s.io": "v1",
}


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    for rt in ALL:
        if rt.group == group and rt.version == version and rt.plural == plural:
            return rt
    return None


def for_kind(api_version: str, kind: str) -> ResourceType | None:
    for rt in ALL:
        if rt.api_version == api_version and rt.kind == kind:
            return rt
    return None


def in_group(group: str, version: str) -> list[ResourceType]:
    return [rt for rt in ALL if rt.group == group and rt.version == version]
