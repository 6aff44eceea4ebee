"""Pods straight from the API's JSON bytes to `model.Pod`. Pure.

Why: the agent mirrors every pod of the cluster, and a pod as kube-apiserver returns it is
about 7 KB of JSON (managedFields, env, probes, volumes, statuses) of which the agent reads a
few hundred bytes. Parsing all of it into dicts and then picking fields (`json.loads`, then
`agent.k8s.convert.pod`) was most of a cold start's work before its first pass. Here msgspec
decodes a LIST page or a watch line into Structs that name only the fields `convert.pod`
reads, skipping the rest without building it, and `convert.pod_of` (the code `convert.pod`
runs) makes the model: the same `model.Pod` from the same input.

Only the structure is typed (objects where `convert.pod` needs objects, lists of containers);
every value `convert.pod_of` checks itself is decoded as whatever JSON holds (`Any`), so
odd values are judged by the same code either way. Whatever this path does not take exactly
as `convert.pod` would (a shape msgspec refuses, a conversion that raises, a pod without a
string name and namespace, JSON that only `json` accepts) goes the old way instead: the item
(or the page) is parsed with `json`, trimmed with `convert.slim_pod`, and the store converts
it and reports it as today (`agent.store`: log line, `podseg_malformed_objects_total`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec

from agent import model
from agent.k8s import convert

# The Structs are not tracked by the cyclic collector (`gc=False`): decoded JSON has no cycles.


class _Container(msgspec.Struct, gc=False):
    ports: Any = None


class _Meta(msgspec.Struct, gc=False):
    name: Any = None
    namespace: Any = None
    uid: Any = None
    resourceVersion: Any = None  # the API's field names
    labels: Any = None
    annotations: Any = None
    deletionTimestamp: Any = None
    ownerReferences: Any = None


class _Spec(msgspec.Struct, gc=False):
    nodeName: Any = None
    hostNetwork: Any = None
    containers: list[_Container] | None = None
    initContainers: list[_Container] | None = None


class _Status(msgspec.Struct, gc=False):
    phase: Any = None
    podIP: Any = None
    podIPs: Any = None


class _Pod(msgspec.Struct, gc=False):
    metadata: _Meta | None = None
    spec: _Spec | None = None
    status: _Status | None = None


class _ListMeta(msgspec.Struct, gc=False):
    resourceVersion: Any = ""  # as `.get("resourceVersion", "")`: null is "None"
    continue_: Any = msgspec.field(default=None, name="continue")


class _Page(msgspec.Struct, gc=False):
    metadata: _ListMeta | None = None
    items: list[_Pod] | None = None


class _RawPage(msgspec.Struct, gc=False):
    metadata: _ListMeta | None = None
    items: list[msgspec.Raw] | None = None


class _Event(msgspec.Struct, gc=False):
    type: Any = None
    object: _Pod | None = None


_PAGE = msgspec.json.Decoder(_Page)
_RAW_PAGE = msgspec.json.Decoder(_RawPage)
_POD = msgspec.json.Decoder(_Pod)
_EVENT = msgspec.json.Decoder(_Event)

# A LIST page: its items (a `model.Pod`, or a slim dict for the store to convert), its
# resourceVersion and its continue token.
Page = tuple[list[Any], str, Any]
Slim = Callable[[dict[str, Any]], dict[str, Any]]


class _Declined(Exception):
    """This item is not one the typed path takes exactly as `convert.pod` would."""


def _model(raw: _Pod) -> model.Pod:
    """The model of a decoded pod; `_Declined` when the dict path must decide instead."""
    meta, spec, status = raw.metadata, raw.spec or _Spec(), raw.status or _Status()
    # The store keys a pod `<namespace>/<name>` from these; any other shape is the store's to
    # report (a missing namespace would also key the pod differently from `model.Pod.key`).
    if meta is None or not isinstance(meta.name, str) or not isinstance(meta.namespace, str):
        raise _Declined
    if not meta.namespace:
        raise _Declined
    containers = (spec.containers or []) + (spec.initContainers or [])
    try:
        return convert.pod_of(
            namespace=meta.namespace,
            name=meta.name,
            uid=meta.uid,
            resource_version=meta.resourceVersion,
            labels=meta.labels,
            annotations=meta.annotations,
            deleting=meta.deletionTimestamp is not None,
            owners=meta.ownerReferences,
            node=spec.nodeName,
            host_network=spec.hostNetwork,
            ports=[c.ports for c in containers],
            phase=status.phase,
            pod_ips=status.podIPs,
            pod_ip=status.podIP,
        )
    except Exception as exc:  # the dict path raises it again, and the store reports it
        raise _Declined from exc


def _old_way(raw: bytes) -> Any:
    obj = json.loads(raw)
    return convert.slim_pod(obj) if isinstance(obj, dict) else obj


def page(data: bytes) -> Page:
    """The items, resourceVersion and continue token of a LIST page of pods, as
    `json.loads` and `convert.slim_pod` then `convert.pod` would read them."""
    try:
        body = _PAGE.decode(data)
        items: list[Any] = [_model(p) for p in body.items or []]
    except (msgspec.MsgspecError, _Declined):
        return _per_item(data)
    meta = body.metadata or _ListMeta()
    return items, str(meta.resourceVersion), meta.continue_


def _per_item(data: bytes) -> Page:
    """A page the whole-page decoding declined: each item typed, or the old way alone."""
    try:
        body = _RAW_PAGE.decode(data)
    except msgspec.MsgspecError:
        return json_page(data)
    items: list[Any] = []
    for raw in body.items or []:
        try:
            items.append(_model(_POD.decode(raw)))
        except (msgspec.MsgspecError, _Declined):
            items.append(_old_way(bytes(raw)))
    meta = body.metadata or _ListMeta()
    return items, str(meta.resourceVersion), meta.continue_


def json_page(data: bytes, slim: Slim | None = convert.slim_pod) -> Page:
    """A LIST page read the old way: `json.loads`, each object trimmed by `slim` (any kind)."""
    body = json.loads(data)
    found = body.get("items") or []
    items = [slim(i) if slim is not None and isinstance(i, dict) else i for i in found]
    meta = body.get("metadata") or {}
    return items, str(meta.get("resourceVersion", "")), meta.get("continue")


def event(line: str | bytes) -> tuple[Any, Any] | None:
    """(type, pod) of a watch line that adds, changes or deletes a pod, the pod as a
    `model.Pod`; None for any other line (ERROR, BOOKMARK) and for a pod the typed path
    declines: the caller reads those with `json` as before."""
    try:
        decoded = _EVENT.decode(line)
        if decoded.type not in ("ADDED", "MODIFIED", "DELETED") or decoded.object is None:
            return None
        return decoded.type, _model(decoded.object)
    except (msgspec.MsgspecError, _Declined):
        return None
