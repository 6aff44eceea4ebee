"""The catalogue of API resources the emulator serves and how each one behaves.

Routing, discovery documents, error details, defaulting and validation all key off these
descriptors, so adding a built-in resource type means adding one entry here (plus its rules).
Custom resources come and go at run time: each object store owns a `Catalogue` of the
built-in types plus the kinds its CustomResourceDefinitions serve (testbed.emulator.crds).
"""

from __future__ import annotations

import dataclasses
from typing import Any


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


def present(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as served under ``rt``'s version: the versions of one custom kind share their
    objects and differ only in ``apiVersion`` (a CRD without a conversion webhook)."""
    if obj.get("apiVersion") in (None, rt.api_version):
        return obj
    return {**obj, "apiVersion": rt.api_version}


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

CUSTOM_RESOURCE_DEFINITIONS = ResourceType(
    group="apiextensions.k8s.io",
    version="v1",
    plural="customresourcedefinitions",
    singular="customresourcedefinition",
    kind="CustomResourceDefinition",
    namespaced=False,
    short_names=("crd", "crds"),
    subresources=("status",),
    has_generation=True,
)

BUILTIN: tuple[ResourceType, ...] = (
    PODS,
    NAMESPACES,
    NODES,
    SERVICES,
    EVENTS,
    NETWORK_POLICIES,
    ENDPOINT_SLICES,
    LEASES,
    CUSTOM_RESOURCE_DEFINITIONS,
)


class Catalogue:
    """The resource types served right now: the built-in ones plus, per CustomResourceDefinition
    (by its name), the types of its served versions. Every version of one (group, plural) shares
    one `ResourceType.key`, hence one table of objects."""

    def __init__(self, builtin: tuple[ResourceType, ...] = BUILTIN) -> None:
        self._builtin = builtin
        self._custom: dict[str, tuple[ResourceType, ...]] = {}

    def all(self) -> list[ResourceType]:
        return [*self._builtin, *(rt for types in self._custom.values() for rt in types)]

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        for rt in self.all():
            if rt.group == group and rt.version == version and rt.plural == plural:
                return rt
        return None

    def for_kind(self, api_version: str, kind: str) -> ResourceType | None:
        for rt in self.all():
            if rt.api_version == api_version and rt.kind == kind:
                return rt
        return None

    def in_group(self, group: str, version: str) -> list[ResourceType]:
        return [rt for rt in self.all() if rt.group == group and rt.version == version]

    def group_versions(self) -> dict[str, list[str]]:
        """Each named group (the core group "" excluded) and its versions, in serving order."""
        out: dict[str, list[str]] = {}
        for rt in self.all():
            if rt.group and rt.version not in out.setdefault(rt.group, []):
                out[rt.group].append(rt.version)
        return out

    def custom(self, name: str) -> tuple[ResourceType, ...]:
        """The types CustomResourceDefinition `name` serves (empty when none)."""
        return self._custom.get(name, ())

    def serve(self, name: str, types: tuple[ResourceType, ...]) -> None:
        """Serve `types` for CustomResourceDefinition `name` (replacing what it served)."""
        self._custom[name] = types

    def withdraw(self, name: str) -> tuple[ResourceType, ...]:
        """Stop serving CustomResourceDefinition `name`'s types; returns them."""
        return self._custom.pop(name, ())
