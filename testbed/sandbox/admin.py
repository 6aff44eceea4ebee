"""The network-policy-api side of a test cluster: install the CRDs of deploy/crds/ and apply
ClusterNetworkPolicy / AdminNetworkPolicy / BaselineAdminNetworkPolicy objects.

Everything goes through plain HTTP the way `kubectl apply` does it (GET, then POST or a merge
PATCH carrying the last-applied annotation), with the official client's ApiClient for the
connection, so the same calls work against the emulator and a real API server, and the
custom kinds need no generated client.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

import kubernetes.client
import yaml

CRD_DIR = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "crds"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
GROUP = "policy.networking.k8s.io"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
MERGE_PATCH = "application/merge-patch+json"

# kind -> (version, plural) the helpers write; all three kinds are cluster-scoped.
ADMIN_KINDS = {
    "ClusterNetworkPolicy": ("v1alpha2", "clusternetworkpolicies"),
    "AdminNetworkPolicy": ("v1alpha1", "adminnetworkpolicies"),
    "BaselineAdminNetworkPolicy": ("v1alpha1", "baselineadminnetworkpolicies"),
}
CRD_NAMES = tuple(f"{plural}.{GROUP}" for _, plural in ADMIN_KINDS.values())


class ApiError(Exception):
    """A non-2xx answer: `status` and the server's body."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: {status} {body[:300]}")
        self.status = status
        self.body = body


def request(
    api: kubernetes.client.ApiClient,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
) -> Any:
    """One request; the decoded JSON answer. Non-2xx raises ApiError."""
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    prepared = api.param_serialize(
        method=method,
        resource_path=path,
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*prepared, _request_timeout=(5, 30))
    data = response.read()
    if not 200 <= response.status <= 299:
        raise ApiError(method, path, response.status, data.decode(errors="replace"))
    return json.loads(data) if data else None


def crd_manifests(directory: pathlib.Path = CRD_DIR) -> list[dict[str, Any]]:
    """The CRDs the kustomization of `directory` lists, in its order."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    out: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        out.extend(d for d in yaml.safe_load_all((directory / name).read_text()) if d)
    return out


def object_path(obj: dict[str, Any]) -> str:
    """The URL of a CRD or an admin policy object (cluster-scoped kinds)."""
    kind, name = obj.get("kind"), obj["metadata"]["name"]
    if kind == "CustomResourceDefinition":
        return f"{CRDS}/{name}"
    if kind not in ADMIN_KINDS:
        raise ValueError(f"not a CRD or an admin policy kind: {kind}")
    version, plural = ADMIN_KINDS[kind]
    group, _, written = str(obj.get("apiVersion") or "").partition("/")
    if group == GROUP and written:
        version = written  # the version the object is written in (v1beta1, v1alpha2...)
    return f"/apis/{GROUP}/{version}/{plural}/{name}"


def apply(api: kubernetes.client.ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    """Create or update `obj` like `kubectl apply` (client side): the stored object."""
    path = object_path(obj)
    body = json.loads(json.dumps(obj))
    meta = body.setdefault("metadata", {})
    applied = json.dumps(obj, separators=(",", ":"), sort_keys=True)
    meta.setdefault("annotations", {})[LAST_APPLIED] = applied
    try:
        request(api, "GET", path)
    except ApiError as exc:
        if exc.status != 404:
            raise
        collection = path.rsplit("/", 1)[0]
        created: dict[str, Any] = request(api, "POST", collection, body)
        return created
    patched: dict[str, Any] = request(api, "PATCH", path, body, MERGE_PATCH)
    return patched


def delete(api: kubernetes.client.ApiClient, obj: dict[str, Any]) -> None:
    """Delete `obj` (its kind and name are enough); absent already is fine."""
    try:
        request(api, "DELETE", object_path(obj))
    except ApiError as exc:
        if exc.status != 404:
            raise


def wait_served(api: kubernetes.client.ApiClient, timeout: float = 30.0) -> None:
    """Until every admin kind is in the group's discovery documents (CRDs established)."""
    deadline = time.monotonic() + timeout
    wanted = {(version, plural) for version, plural in ADMIN_KINDS.values()}
    while True:
        served = set()
        for version in {v for v, _ in wanted}:
            try:
                doc = request(api, "GET", f"/apis/{GROUP}/{version}")
            except ApiError:
                continue
            served |= {(version, r["name"]) for r in doc.get("resources", [])}
        if wanted <= served:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"admin kinds not served after {timeout}s: {wanted - served}")
        time.sleep(0.05)


def install_crds(api: kubernetes.client.ApiClient) -> list[str]:
    """Apply every CRD of deploy/crds/ and wait until its kinds are served; their names."""
    names = [apply(api, crd)["metadata"]["name"] for crd in crd_manifests()]
    wait_served(api)
    return names


def uninstall_crds(api: kubernetes.client.ApiClient, names: tuple[str, ...] = CRD_NAMES) -> None:
    for name in names:
        delete(api, {"kind": "CustomResourceDefinition", "metadata": {"name": name}})


def policy(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """An admin policy object of `kind` (a key of ADMIN_KINDS)."""
    version, _ = ADMIN_KINDS[kind]
    return {
        "apiVersion": f"{GROUP}/{version}",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }
