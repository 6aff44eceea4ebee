"""A small kustomize renderer: exactly the features deploy/ uses, and a loud error otherwise.

`kubectl` is not on a fresh machine, so the tests render the bases themselves: the
`resources` list (files with one or more documents, or sub-directories that are kustomizations
themselves), `components` (directories holding a `kind: Component`, applied after the
resources), the `images` transform (a container image whose name matches gets `newName`,
`newTag` or `digest`, in pod templates) and the `namespace` transform (set on namespaced
objects, and on the ServiceAccount subjects of role bindings, as kustomize does). Any other
kustomization field fails the render, so a base can never silently mean something this renderer
ignores. Like kustomize's default load restrictor, a resource file must lie inside the
kustomization's directory. tests/cluster checks these renders against the real `kubectl
kustomize` when a cluster is up.
"""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "namespace", "resources", "components", "images"}
COMPONENT_SUPPORTED = {"apiVersion", "kind", "images"}
IMAGE_FIELDS = {"name", "newName", "newTag", "digest"}
POD_TEMPLATE_PATHS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
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
    for entry in spec.get("components") or []:
        _apply_component(root / entry, objects)
    _set_images(objects, spec.get("images") or [], kfile)
    namespace = spec.get("namespace")
    if namespace:
        for obj in objects:
            _set_namespace(obj, namespace)
    keys = [identity(o) for o in objects]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise RenderError(f"{kfile}: duplicate objects {sorted(duplicates)}")
    return objects


def _apply_component(path: pathlib.Path, objects: list[dict[str, Any]]) -> None:
    cfile = path / "kustomization.yaml"
    if not cfile.is_file():
        raise RenderError(f"{path}: no kustomization.yaml for the component")
    spec = yaml.safe_load(cfile.read_text())
    if spec.get("kind") != "Component":
        raise RenderError(f"{cfile}: kind must be Component")
    unknown = set(spec) - COMPONENT_SUPPORTED
    if unknown:
        raise RenderError(f"{cfile}: unsupported fields {sorted(unknown)}")
    _set_images(objects, spec.get("images") or [], cfile)


def split_image(image: str) -> tuple[str, str, str]:
    """(name, tag, digest) of an image reference; tag and digest may be empty."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = ""
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest


def _set_images(objects: list[dict[str, Any]], entries: list[dict[str, Any]], where: Any) -> None:
    for entry in entries:
        unknown = set(entry) - IMAGE_FIELDS
        if unknown or "name" not in entry:
            raise RenderError(f"{where}: unsupported images entry {entry}")
    for obj in objects:
        spec: Any = obj
        for key in POD_TEMPLATE_PATHS.get(obj["kind"], ()):
            spec = spec.get(key) if isinstance(spec, dict) else None
        if obj["kind"] not in POD_TEMPLATE_PATHS or not isinstance(spec, dict):
            continue
        for key in ("initContainers", "containers"):
            for container in spec.get(key) or []:
                name, tag, digest = split_image(container["image"])
                for entry in entries:
                    if entry["name"] != name:
                        continue
                    new_name = entry.get("newName", name)
                    if "digest" in entry:
                        container["image"] = f"{new_name}@{entry['digest']}"
                    elif "newTag" in entry:
                        container["image"] = f"{new_name}:{entry['newTag']}"
                    else:
                        suffix = f":{tag}" if tag else ""
                        container["image"] = f"{new_name}{suffix}" + (
                            f"@{digest}" if digest else ""
                        )


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
