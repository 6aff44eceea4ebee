"""Server-side defaulting applied to incoming objects before validation and storage.

The real API server fills many fields (``protocol: TCP`` on ports, NetworkPolicy
``policyTypes``, pod ``restartPolicy``...).  Code under test reads objects back from the
server, so it must see the same defaults here or it would pass against the emulator and fail
against a real cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from testbed.emulator import resources, serviceips


def _dict(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        value = {}
        parent[key] = value
    return value


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _default_protocol(ports: Any) -> None:
    for port in _dicts(ports):
        if not port.get("protocol"):
            port["protocol"] = "TCP"


def _image_pull_policy(image: Any) -> str:
    if not isinstance(image, str):
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1].split("@", 1)[0]
    if ":" not in last or last.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


def _pod(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    for key in ("containers", "initContainers"):
        for container in _dicts(spec.get(key)):
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("imagePullPolicy", _image_pull_policy(container.get("image")))
            container.setdefault("resources", {})
            _default_protocol(container.get("ports"))


def _service(obj: dict[str, Any], taken_ips: Callable[[], set[str]]) -> None:
    spec = _dict(obj, "spec")
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in _dicts(spec.get("ports")):
        port.setdefault("protocol", "TCP")
        if "targetPort" not in port and "port" in port:
            port["targetPort"] = port["port"]
    if spec["type"] != "ExternalName":
        # clusterIP(s), ipFamilies, ipFamilyPolicy; may raise serviceips.AllocationError.
        serviceips.fill(spec, taken_ips())
        spec.setdefault("internalTrafficPolicy", "Cluster")


def _namespace(obj: dict[str, Any]) -> None:
    meta = _dict(obj, "metadata")
    name = meta.get("name")
    if isinstance(name, str) and name:
        _dict(meta, "labels")["kubernetes.io/metadata.name"] = name
    spec = _dict(obj, "spec")
    spec.setdefault("finalizers", ["kubernetes"])


def _network_policy(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    if not spec.get("policyTypes"):
        types = ["Ingress"]
        if spec.get("egress"):
            types.append("Egress")
        spec["policyTypes"] = types
    for direction in ("ingress", "egress"):
        for rule in _dicts(spec.get(direction)):
            _default_protocol(rule.get("ports"))


def _endpoint_slice(obj: dict[str, Any]) -> None:
    for port in _dicts(obj.get("ports")):
        port.setdefault("name", "")
        port.setdefault("protocol", "TCP")


def apply(
    rt: resources.ResourceType, obj: dict[str, Any], taken_ips: Callable[[], set[str]]
) -> None:
    """Fill defaults into ``obj`` in place (spec-level; metadata is the store's job).

    `taken_ips` returns the ClusterIPs other Services hold (called for Services only).
    """
    if rt is resources.PODS:
        _pod(obj)
    elif rt is resources.SERVICES:
        _service(obj, taken_ips)
    elif rt is resources.NAMESPACES:
        _namespace(obj)
    elif rt is resources.NETWORK_POLICIES:
        _network_policy(obj)
    elif rt is resources.ENDPOINT_SLICES:
        _endpoint_slice(obj)


def initial_status(rt: resources.ResourceType, obj: dict[str, Any]) -> None:
    """Reset status on create the way each registry strategy's PrepareForCreate does."""
    if rt is resources.PODS:
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    elif rt is resources.SERVICES:
        obj["status"] = {"loadBalancer": {}}
    elif rt is resources.NAMESPACES:
        obj["status"] = {"phase": "Active"}
