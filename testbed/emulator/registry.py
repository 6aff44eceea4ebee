"""REST semantics of each verb: what kube-apiserver's generic registry does around storage.

Create/update/patch/delete here apply metadata management, defaulting, validation,
optimistic concurrency, status-subresource rules, namespace existence and namespace
cascade, then commit to the Store.  The HTTP layer only parses requests and renders
results, so these rules can be exercised without a socket.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import copy
import datetime
import json
import random
import uuid
from typing import Any

from testbed.emulator import (
    apistatus,
    crds,
    defaults,
    fielderrors,
    objectstore,
    patching,
    resources,
    serviceips,
    validation,
    watchcache,
)

INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
UNDELETABLE_NAMESPACES = ("default", "kube-system", "kube-public")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SERVER_META = ("uid", "creationTimestamp", "generation", "deletionTimestamp")


def now_timestamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    if meta is None:
        meta = {}
        obj["metadata"] = meta
    if not isinstance(meta, dict):
        raise apistatus.bad_request("metadata must be a JSON object")
    return meta


def _outside_meta_status(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


class _Admission:
    """What a write passes through before it is stored: the body's kind and apiVersion, its
    namespace against the URL's, the namespace's existence, a generated name, server-side
    defaults (ClusterIP allocation for Services) and validation."""

    store: objectstore.Store
    validate_enabled: bool

    def _defaults(
        self, rt: resources.ResourceType, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        """Server-side defaults; for Services also ClusterIP allocation (422 when refused)."""
        meta = obj.get("metadata") or {}
        me = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if rt is resources.SERVICES and old is not None:
            # Like the real registry: an update that omits the allocation keeps the old one.
            spec, old_spec = obj.get("spec"), old.get("spec") or {}
            if isinstance(spec, dict) and spec.get("type", "ClusterIP") != "ExternalName":
                for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                    if not spec.get(key) and old_spec.get(key):
                        spec[key] = copy.deepcopy(old_spec[key])

        def taken() -> set[str]:
            return serviceips.used(self.store.items(resources.SERVICES), skip=me)

        try:
            defaults.apply(rt, obj, taken)
        except serviceips.AllocationError as exc:
            spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
            assert isinstance(spec, dict)
            value = spec.get("clusterIPs") or spec.get("clusterIP")
            field = fielderrors.invalid("spec.clusterIPs", value, str(exc))
            raise apistatus.invalid(rt, me[1], [field]) from None

    def _check_type(self, rt: resources.ResourceType, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise apistatus.bad_request(
                f"the object provided is unrecognized (must be of type {rt.kind})"
            )
        api_version = body.setdefault("apiVersion", rt.api_version)
        kind = body.setdefault("kind", rt.kind)
        if api_version != rt.api_version:
            raise apistatus.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({rt.api_version})"
            )
        if kind != rt.kind:
            raise apistatus.bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
            )
        return body

    def _check_namespace(self, rt: resources.ResourceType, meta: dict[str, Any], ns: str) -> None:
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != ns:
                raise apistatus.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)

    def _require_namespace(self, rt: resources.ResourceType, ns: str) -> None:
        if rt.namespaced and self.store.get(resources.NAMESPACES, "", ns) is None:
            raise apistatus.not_found(resources.NAMESPACES, ns)

    def _validate(
        self, rt: resources.ResourceType, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        if not self.validate_enabled:
            return
        errs = validation.validate(rt, obj, old)
        if errs:
            name = str(obj["metadata"].get("name") or obj["metadata"].get("generateName") or "")
            raise apistatus.invalid(rt, name, errs)

    def _generate_name(self, rt: resources.ResourceType, ns: str, prefix: str) -> str:
        """SimpleNameGenerator: prefix (cut to 58 chars) plus 5 random characters."""
        while True:
            suffix = "".join(random.choice(_GENERATE_ALPHABET) for _ in range(5))
            name = prefix[: 63 - 5] + suffix
            if self.store.get(rt, ns, name) is None:
                return name


class Registry(_Admission):
    """The verbs (get, list, create, replace, patch, delete, delete collection) and the test
    backdoors (insert, remove) over one Store."""

    def __init__(self, st: objectstore.Store, *, validate: bool = True) -> None:
        self.store = st
        self.validate_enabled = validate
        for name in INITIAL_NAMESPACES:
            ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            self.create(resources.NAMESPACES, "", ns)

    # --- verbs --------------------------------------------------------------------------

    def _existing(self, rt: resources.ResourceType, ns: str, name: str) -> dict[str, Any]:
        old = self.store.get(rt, ns, name)
        if old is None:
            raise apistatus.not_found(rt, name)
        return old

    def get(self, rt: resources.ResourceType, ns: str, name: str) -> dict[str, Any]:
        return resources.present(rt, self._existing(rt, ns, name))

    def list(
        self, flt: watchcache.Filter, limit: int | None = None, continue_token: str | None = None
    ) -> dict[str, Any]:
        rv = self.store.rv
        start: tuple[str, str] | None = None
        if continue_token:
            rv, start = _decode_continue(continue_token)
        keys = self.store.keys(flt.rt)
        first = 0 if start is None else bisect.bisect_right(keys, start)
        items: list[dict[str, Any]] = []
        remaining = 0
        everything = flt.namespace is None and not flt.labels.requirements
        everything = everything and not flt.fields.requirements
        for at, key in enumerate(keys[first:], first):
            if flt.namespace is not None and key[0] != flt.namespace:
                continue
            obj = self.store.get(flt.rt, key[0], key[1])
            if obj is None or not flt.matches(obj):
                continue
            if limit and len(items) == limit:
                if everything:  # every key left is an object of the page's kind
                    remaining = len(keys) - at
                    break
                remaining += 1  # counted, not copied
                continue
            items.append(obj)
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if remaining:
            meta["continue"] = _encode_continue(rv, objectstore.obj_key(items[-1]))
            meta["remainingItemCount"] = remaining
        return {
            "kind": flt.rt.list_kind,
            "apiVersion": flt.rt.api_version,
            "metadata": meta,
            # Like the real server, list items carry no kind/apiVersion of their own.
            "items": [
                {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")} for obj in items
            ],
        }

    def create(self, rt: resources.ResourceType, ns: str, body: Any) -> dict[str, Any]:
        obj = self._check_type(rt, copy.deepcopy(body))
        meta = _meta(obj)
        self._check_namespace(rt, meta, ns)
        self._require_namespace(rt, ns)
        if meta.get("resourceVersion"):
            raise apistatus.bad_request(
                "resourceVersion should not be set on objects to be created"
            )
        for key in _SERVER_META:
            meta.pop(key, None)
        defaults.initial_status(rt, obj)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = self._generate_name(rt, ns, str(meta["generateName"]))
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_timestamp()
        if rt.has_generation:
            meta["generation"] = 1
        self._defaults(rt, obj, None)
        self._validate(rt, obj, None)
        if not isinstance(meta.get("name"), str) or not meta["name"]:
            # Even with validation off an object needs a usable name to be stored.
            required = fielderrors.required("metadata.name", "name or generateName is required")
            raise apistatus.invalid(rt, "", [required])
        if self.store.get(rt, ns, meta["name"]) is not None:
            raise apistatus.already_exists(rt, meta["name"])
        if rt is resources.CUSTOM_RESOURCE_DEFINITIONS:
            crds.admit(self.store, obj, None, now_timestamp())
        stored = self.store.create(rt, obj)
        if rt is resources.CUSTOM_RESOURCE_DEFINITIONS:
            crds.serve(self.store, stored)
        return resources.present(rt, stored)

    def replace(
        self,
        rt: resources.ResourceType,
        ns: str,
        name: str,
        body: Any,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        obj = self._check_type(rt, copy.deepcopy(body))
        meta = _meta(obj)
        if meta.get("name") != name:
            raise apistatus.bad_request(
                f"the name of the object ({meta.get('name', '')}) does not match the name on "
                f"the URL ({name})"
            )
        self._check_namespace(rt, meta, ns)
        old = self._existing(rt, ns, name)
        rv = meta.get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise apistatus.conflict(rt, name)
        return self._update(rt, obj, old, subresource)

    def _update(
        self,
        rt: resources.ResourceType,
        obj: dict[str, Any],
        old: dict[str, Any],
        subresource: str | None,
    ) -> dict[str, Any]:
        if subresource == "status":
            new = copy.deepcopy(old)
            new["status"] = copy.deepcopy(obj.get("status"))
            if new["status"] is None:
                del new["status"]
        else:
            new = obj
            if "status" in rt.subresources:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            if rt is resources.NAMESPACES:
                new.setdefault("spec", {})["finalizers"] = copy.deepcopy(
                    (old.get("spec") or {}).get("finalizers", [])
                )
        meta = new["metadata"]
        old_meta = old["metadata"]
        for key in _SERVER_META:
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        self._defaults(rt, new, old)
        self._validate(rt, new, old)
        if rt.has_generation and _outside_meta_status(new) != _outside_meta_status(old):
            meta["generation"] = int(old_meta.get("generation") or 0) + 1
        if rt is resources.CUSTOM_RESOURCE_DEFINITIONS:
            crds.admit(self.store, new, old, now_timestamp())
        if new == old:
            return resources.present(rt, old)  # a no-op write: no new RV, no watch event
        stored = self.store.update(rt, new, old)
        if rt is resources.CUSTOM_RESOURCE_DEFINITIONS:
            crds.serve(self.store, stored)
        return resources.present(rt, stored)

    def patch(
        self,
        rt: resources.ResourceType,
        ns: str,
        name: str,
        content_type: str,
        patch: Any,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        if content_type not in patching.SUPPORTED:
            raise apistatus.unsupported_media_type(content_type)
        old = self._existing(rt, ns, name)
        patched = patching.apply(content_type, old, patch)
        obj = self._check_type(rt, patched)
        meta = _meta(obj)
        if meta.get("name") != name:
            raise apistatus.bad_request(
                f"the name of the object ({meta.get('name', '')}) does not match the name on "
                f"the URL ({name})"
            )
        self._check_namespace(rt, meta, ns)
        rv = meta.get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise apistatus.conflict(rt, name)
        return self._update(rt, obj, old, subresource)

    def delete(
        self, rt: resources.ResourceType, ns: str, name: str, options: Any = None
    ) -> dict[str, Any]:
        """DELETE: the deleted object for pods/services, else a Success Status."""
        gone = self._delete(rt, ns, name, options)
        if rt.return_deleted_object:
            return resources.present(rt, gone)
        return apistatus.status_success(rt, name, str(gone["metadata"].get("uid", "")))

    def _delete(
        self, rt: resources.ResourceType, ns: str, name: str, options: Any
    ) -> dict[str, Any]:
        old = self._existing(rt, ns, name)
        pre = options.get("preconditions") if isinstance(options, dict) else None
        if isinstance(pre, dict):
            meta = old["metadata"]
            if pre.get("uid") and pre["uid"] != meta.get("uid"):
                raise apistatus.conflict(
                    rt,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, UID in object "
                    f"meta: {meta.get('uid')}",
                )
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
                raise apistatus.conflict(
                    rt,
                    name,
                    "Precondition failed: ResourceVersion in precondition: "
                    f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                    f"{meta['resourceVersion']}",
                )
        if rt is resources.NAMESPACES:
            if name in UNDELETABLE_NAMESPACES:
                raise apistatus.forbidden(rt, name, "this namespace may not be deleted")
            done: set[tuple[str, str]] = set()
            for other in self.store.catalogue.all():
                if other.namespaced and other.key not in done:
                    done.add(other.key)
                    for obj in self.store.items(other, name):
                        self.store.delete(other, obj)
        gone = self.store.delete(rt, old)
        if rt is resources.CUSTOM_RESOURCE_DEFINITIONS:
            crds.withdraw(self.store, name)
        return gone

    def delete_collection(self, flt: watchcache.Filter) -> dict[str, Any]:
        deleted = []
        for obj in self.store.items(flt.rt, flt.namespace):
            if flt.matches(obj):
                ns, name = objectstore.obj_key(obj)
                if flt.rt is resources.NAMESPACES and name in UNDELETABLE_NAMESPACES:
                    continue
                deleted.append(self._delete(flt.rt, ns, name, None))
        return {
            "kind": flt.rt.list_kind,
            "apiVersion": flt.rt.api_version,
            "metadata": {"resourceVersion": str(self.store.rv)},
            "items": deleted,
        }

    # --- test backdoors -----------------------------------------------------------------

    def insert(self, body: dict[str, Any]) -> dict[str, Any]:
        """Store ``body`` as is (no defaulting/validation/namespace checks), create or replace."""
        obj = copy.deepcopy(body)
        kind = str(obj.get("kind", ""))
        rt = self.store.catalogue.for_kind(str(obj.get("apiVersion", "")), kind)
        if rt is None:
            raise ValueError(f"unknown apiVersion/kind: {obj.get('apiVersion')}/{obj.get('kind')}")
        meta = _meta(obj)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ValueError("insert needs metadata.name or metadata.generateName")
            ns = str(meta.get("namespace") or "default") if rt.namespaced else ""
            meta["name"] = self._generate_name(rt, ns, str(meta["generateName"]))
        if rt.namespaced:
            meta["namespace"] = meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        old = self.store.get(rt, str(meta.get("namespace", "")), str(meta["name"]))
        if old is not None:
            meta["uid"] = old["metadata"].get("uid")
            meta["creationTimestamp"] = old["metadata"].get("creationTimestamp")
            stored = self.store.update(rt, obj, old)
            if rt is resources.CUSTOM_RESOURCE_DEFINITIONS:
                crds.serve(self.store, stored)
            return copy.deepcopy(stored)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_timestamp())
        if rt.has_generation:
            meta.setdefault("generation", 1)
        stored = self.store.create(rt, obj)
        if rt is resources.CUSTOM_RESOURCE_DEFINITIONS:
            crds.serve(self.store, stored)
        return copy.deepcopy(stored)

    def remove(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        """Delete an object unconditionally (no cascade, no protection); KeyError if absent."""
        rt = self.store.catalogue.for_kind(api_version, kind)
        if rt is None:
            raise ValueError(f"unknown apiVersion/kind: {api_version}/{kind}")
        old = self.store.get(rt, namespace, name)
        if old is None:
            raise KeyError(f"{kind} {namespace}/{name} not found")
        gone = self.store.delete(rt, old)
        if rt is resources.CUSTOM_RESOURCE_DEFINITIONS:
            crds.withdraw(self.store, name)
        return copy.deepcopy(gone)


def _encode_continue(rv: int, key: tuple[str, str]) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": list(key)})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        ns, name = data["start"]
        return int(data["rv"]), (str(ns), str(name))
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise apistatus.bad_request(f"continue key is not valid: {exc}") from exc
