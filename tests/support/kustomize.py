"""A small kustomize renderer: exactly the features deploy/ uses, and a loud error otherwise.

`kubectl` is not on a fresh machine, so the tests render the bases themselves: the
`resources` list (files with one or more documents, or sub-directories that are kustomizations
themselves) and the `namespace` transform (set on namespaced objects, and on the ServiceAccount
subjects of role bindings, as kustomize does). Any other kustomization field fails the render, so
a base can never silently mean something this renderer ignores. Like kustomize's default load
restrictor, a resource file must lie inside the kustomization's directory.
"""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "namespace", "resources"}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "CustomResourceDefinition",
    "Node",
    "PersistentVolume",
    "StorageClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


class RenderError(ValueError):
    """The kustomization uses something this renderer does not implement, or is broken."""


def load_documents(path: pathlib.Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise RenderError(f"{path}: a document without apiVersion/kind")
    return docs


def render(root: pathlib.Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize root` would print (same content, same order)."""
    kfile = root / "kustomization.yaml"
    spec = yaml.safe_load(kfile.read_text())
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise RenderError(f"{kfile}: unsupported fields {sorted(unknown)}")
    if spec.get("kind") != "Kustomization":
        raise RenderError(f"{kfile}: kind must be Kustomization")
    objects: list[dict[str, Any]] = []
    for entry in spec.get("resources") or []:
        path = (root / entry).resolve()
        if path.is_dir():
            objects.extend(render(path))
            continue
        if root.resolve() not in path.parents:
            raise RenderError(f"{kfile}: {entry} lies outside the kustomization root")
        if not path.is_file():
            raise RenderError(f"{kfile}: missing resource {entry}")
        objects.extend(load_documents(path))
    namespace = spec.get("namespace")
    if namespace:
        for obj in objects:
            _set_namespace(obj, namespace)
    keys = [identity(o) for o in objects]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise RenderError(f"{kfile}: duplicate objects {sorted(duplicates)}")
    return objects


def identity(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return (obj["kind"], str(meta.get("namespace", "")), str(meta.get("name", "")))


def _set_namespace(obj: dict[str, Any], namespace: str) -> None:
    if obj["kind"] not in CLUSTER_SCOPED:
        obj.setdefault("metadata", {})["namespace"] = namespace
    if obj["kind"] in ("RoleBinding", "ClusterRoleBinding"):
        for subject in obj.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = namespace
