"""API objects as the API server returns them (raw JSON shapes), and stores holding them, for
tests that drive the agent's store and sync layer without an API server."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from agent import config, store
from agent.k8s import watch


def pod(
    namespace: str,
    name: str,
    ip: str | None,
    *,
    node: str = "node-1",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    version: str = "1",
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running"}
    if ip is not None:
        status.update(podIP=ip, podIPs=[{"ip": ip}])
    return {
        "metadata": {
            "namespace": namespace,
            "name": name,
            "uid": f"uid-{namespace}-{name}",
            "resourceVersion": version,
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "agnhost"}]},
        "status": status,
    }


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/metadata.name": name, **(labels or {})},
        }
    }


def node(name: str, *addresses: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": "1"},
        "status": {"addresses": [{"type": "InternalIP", "address": a} for a in addresses]},
    }


def policy(namespace: str, name: str, spec: dict[str, Any], version: str = "1") -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name, "resourceVersion": version},
        "spec": spec,
    }


def relist(resource: str, items: list[dict[str, Any]]) -> watch.Relist:
    return watch.Relist(resource, items, "1", time.monotonic())


def event(resource: str, kind: str, obj: dict[str, Any]) -> watch.WatchEvent:
    return watch.WatchEvent(resource, kind, obj, time.monotonic())


def synced_store(
    *,
    pods: Sequence[dict[str, Any]] = (),
    namespaces: Sequence[dict[str, Any]] = (),
    policies: Sequence[dict[str, Any]] = (),
    nodes: Sequence[dict[str, Any]] = (),
) -> store.Store:
    """A store in sync (every kind listed once) holding these objects."""
    cluster = store.Store()
    for resource, items in (
        ("nodes", nodes),
        ("namespaces", namespaces),
        ("pods", pods),
        ("networkpolicies", policies),
        ("services", []),
        ("endpointslices", []),
    ):
        cluster.apply(relist(resource, list(items)), store.Change())
    return cluster


def settings(**extra: Any) -> config.Settings:
    """Agent settings of node `node-1` for tests (no /proc scan, no node guard by default)."""
    defaults: dict[str, Any] = {
        "node_name": "node-1",
        "kubeconfig": None,
        "netns_dir": "/run/netns",
        "scan_proc": False,
        "node_guard_ports": None,
        "strict": False,
    }
    return config.Settings(**{**defaults, **extra})
