"""CustomResourceDefinitions: what a CRD object means to the emulator's catalogue.

A created CRD makes its kinds served (every served version, shared storage, cluster- or
namespace-scoped as `spec.scope` says) with no schema validation beyond metadata; the registry
calls `admit` before storing a CRD, `serve` after, and `withdraw` when the CRD goes (its kinds'
objects are deleted). Kept apart from the registry so the reading of a CRD (names, scope,
versions, status) stays in one place.
"""

from __future__ import annotations

from typing import Any

from testbed.emulator import apistatus, fielderrors, objectstore, resources

FE = fielderrors.FieldError
SCOPES = ("Namespaced", "Cluster")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _versions(spec: dict[str, Any]) -> list[dict[str, Any]]:
    raw = spec.get("versions")
    return [v for v in raw if isinstance(v, dict)] if isinstance(raw, list) else []


def validate(obj: dict[str, Any]) -> list[FE]:
    """The rules of the real server that decide whether the emulator can serve the CRD."""
    errs: list[FE] = []
    spec = _dict(obj.get("spec"))
    names = _dict(spec.get("names"))
    group = spec.get("group")
    if not isinstance(group, str) or not group:
        errs.append(fielderrors.required("spec.group", ""))
    elif "." not in group:
        errs.append(
            fielderrors.invalid("spec.group", group, "should be a domain with at least one dot")
        )
    plural, kind = names.get("plural"), names.get("kind")
    if not isinstance(plural, str) or not plural:
        errs.append(fielderrors.required("spec.names.plural", ""))
    if not isinstance(kind, str) or not kind:
        errs.append(fielderrors.required("spec.names.kind", ""))
    name = _dict(obj.get("metadata")).get("name")
    if isinstance(plural, str) and isinstance(group, str) and name != f"{plural}.{group}":
        errs.append(
            fielderrors.invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group')
        )
    if spec.get("scope") not in SCOPES:
        errs.append(fielderrors.not_supported("spec.scope", spec.get("scope"), list(SCOPES)))
    versions = _versions(spec)
    if not versions:
        errs.append(
            fielderrors.required(
                "spec.versions", "must have exactly one version marked as storage version"
            )
        )
    elif sum(1 for v in versions if v.get("storage") is True) != 1:
        errs.append(
            fielderrors.invalid(
                "spec.versions", "", "must have exactly one version marked as storage version"
            )
        )
    for i, version in enumerate(versions):
        if not isinstance(version.get("name"), str) or not version["name"]:
            errs.append(fielderrors.required(f"spec.versions[{i}].name", ""))
    return errs


def types(obj: dict[str, Any]) -> tuple[resources.ResourceType, ...]:
    """One ResourceType per served version of a valid CRD."""
    spec = _dict(obj.get("spec"))
    names = _dict(spec.get("names"))
    short = names.get("shortNames")
    out = []
    for version in _versions(spec):
        if version.get("served") is not True:
            continue
        subresources = _dict(version.get("subresources"))
        out.append(
            resources.ResourceType(
                group=str(spec["group"]),
                version=str(version["name"]),
                plural=str(names["plural"]),
                singular=str(names.get("singular") or str(names["kind"]).lower()),
                kind=str(names["kind"]),
                namespaced=spec.get("scope") == "Namespaced",
                short_names=tuple(str(s) for s in short) if isinstance(short, list) else (),
                subresources=("status",) if "status" in subresources else (),
                has_generation=True,
            )
        )
    return tuple(out)


def status(obj: dict[str, Any], now: str) -> dict[str, Any]:
    """The status the real server settles on for a CRD whose names are free: established."""
    spec = _dict(obj.get("spec"))
    stored = [str(v.get("name")) for v in _versions(spec) if v.get("storage") is True]
    old = _dict(obj.get("status")).get("storedVersions")
    if isinstance(old, list):
        stored = sorted({*stored, *(str(v) for v in old)})

    def condition(kind: str, reason: str, message: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": "True",
            "lastTransitionTime": now,
            "reason": reason,
            "message": message,
        }

    return {
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition(
                "Established", "InitialNamesAccepted", "the initial names have been accepted"
            ),
        ],
        "acceptedNames": _dict(spec.get("names")),
        "storedVersions": stored,
    }


# --- what the registry does around a CRD write ------------------------------------------------


def admit(
    store: objectstore.Store, obj: dict[str, Any], old: dict[str, Any] | None, now: str
) -> None:
    """Refuse a CRD the emulator could not serve (always, even with validation off: the
    catalogue needs its names) or whose kind is already served otherwise; set its status."""
    name = str(obj["metadata"].get("name") or "")
    errs = validate(obj)
    if not errs:
        for rt in types(obj):
            taken = store.catalogue.lookup(rt.group, rt.version, rt.plural)
            if taken is not None and taken not in store.catalogue.custom(name):
                errs.append(
                    fielderrors.invalid("spec.names.plural", rt.plural, "is already served")
                )
                break
    if errs:
        raise apistatus.invalid(resources.CUSTOM_RESOURCE_DEFINITIONS, name, errs)
    if old is not None:
        obj["status"] = old.get("status")  # keeps storedVersions
    obj["status"] = status(obj, now)


def serve(store: objectstore.Store, crd: dict[str, Any]) -> None:
    """A stored CRD: serve its kinds; a kind it no longer serves loses its objects."""
    name = str(crd["metadata"]["name"])
    before = store.catalogue.custom(name)
    after = types(crd)
    store.catalogue.serve(name, after)
    kept = {rt.key for rt in after}
    for rt in before:
        if rt.key not in kept:
            kept.add(rt.key)  # once per kind
            store.drop_kind(rt)


def withdraw(store: objectstore.Store, name: str) -> None:
    """The CRD is gone: its kinds stop being served and their objects are deleted."""
    gone = store.catalogue.withdraw(name)
    if gone:
        store.drop_kind(gone[0])
