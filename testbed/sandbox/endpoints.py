"""The EndpointSlice controller's job for the sandbox, as a pure function.

On a cluster, kube-controller-manager writes the EndpointSlices of every Service with a
selector: one slice per address family and per set of resolved ports, each endpoint naming its
pod (`targetRef`), node and readiness, with named targetPorts resolved against each pod's
container ports. The emulator has no controllers, so the sandbox computes the same slices here
and writes them through the API (`SandboxCluster.sync_endpoints`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "podseg-sandbox"


def _resolve(target: Any, protocol: str, pod: Mapping[str, Any]) -> int | None:
    """A Service targetPort on one pod: a number as is, a name via its container ports."""
    if isinstance(target, int):
        return target
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and (port.get("protocol") or "TCP") == protocol:
                return int(port["containerPort"])
    return None


def slices_for(
    service: Mapping[str, Any],
    pods: Iterable[Mapping[str, Any]],
    not_ready: Collection[str] = (),
) -> list[dict[str, Any]]:
    """The EndpointSlices (API dicts) of `service` over `pods`; `not_ready` names pods whose
    endpoints are marked not ready. Empty for Services without selector."""
    meta, spec = service.get("metadata") or {}, service.get("spec") or {}
    namespace, name = meta["namespace"], meta["name"]
    selector = spec.get("selector") or {}
    if not selector:
        return []
    groups: dict[tuple[str, tuple[tuple[str, str, int], ...]], list[dict[str, Any]]] = {}
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name"))):
        pmeta, status = pod.get("metadata") or {}, pod.get("status") or {}
        labels = pmeta.get("labels") or {}
        if pmeta.get("namespace") != namespace:
            continue
        if any(labels.get(k) != v for k, v in selector.items()):
            continue
        ports = []
        for port in spec.get("ports") or []:
            protocol = port.get("protocol") or "TCP"
            number = _resolve(port.get("targetPort", port.get("port")), protocol, pod)
            if number is not None:
                ports.append((port.get("name") or "", protocol, number))
        for entry in status.get("podIPs") or []:
            ip = entry.get("ip", "")
            family = "IPv6" if ":" in ip else "IPv4"
            if family not in (spec.get("ipFamilies") or ["IPv4"]):
                continue
            endpoint = {
                "addresses": [ip],
                "conditions": {"ready": pmeta.get("name") not in not_ready},
                "nodeName": (pod.get("spec") or {}).get("nodeName"),
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": pmeta.get("name")},
            }
            groups.setdefault((family, tuple(sorted(ports))), []).append(endpoint)
    out = []
    for i, ((family, resolved), endpoints) in enumerate(sorted(groups.items(), key=lambda g: g[0])):
        out.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "namespace": namespace,
                    "name": f"{name}-{family.lower()}-{i}",
                    "labels": {SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY},
                },
                "addressType": family,
                "endpoints": endpoints,
                "ports": [{"name": n, "protocol": p, "port": num} for n, p, num in resolved],
            }
        )
    return out
