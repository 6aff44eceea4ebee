"""Raw API objects (JSON dicts) -> frozen model objects, validating as it goes. Pure.

The API server validates NetworkPolicies, but an older or buggy server, or a client that
bypassed validation, can still hand us nonsense. Every invalid part becomes an entry that
matches nothing (never an entry that matches everything) and is described in `errors`, so
the reconciler can log and count it while the valid parts stay enforced.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Mapping
from typing import Any

from agent import model

_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")

Raw = Mapping[str, Any]
# A dict first: JSON gives dicts, and an ABC check costs several times an exact type check.
_MAP = (dict, Mapping)

# The mirror holds every pod of the cluster, and most of what a pod holds repeats across pods:
# label keys and values, namespace and node names, container ports. Each pod read from JSON
# brings its own copies; interned, 10,000 pods share one of each (`_shared`, `_container_port`).
MAX_SHARED_PORTS = 4096  # distinct container ports kept for sharing (bounded: any input)
_PORTS: dict[tuple[int, str, str | None], model.ContainerPort] = {}


def _shared(text: str) -> str:
    """One copy of a string that many pods repeat (short ones: names, labels)."""
    return sys.intern(text) if len(text) <= 64 else text


def _container_port(number: int, protocol: str, name: str | None) -> model.ContainerPort:
    """The container port, shared with every pod that declares the same one."""
    key = (number, protocol, name)
    found = _PORTS.get(key)
    if found is None:
        found = model.ContainerPort(number, _shared(protocol), _shared(name) if name else name)
        if len(_PORTS) < MAX_SHARED_PORTS:
            _PORTS[key] = found
    return found


class SelectorError(ValueError):
    """A label selector that cannot be evaluated."""


def _meta(obj: Raw) -> Raw:
    meta = obj.get("metadata")
    return meta if isinstance(meta, _MAP) else {}


def _labels(obj: Raw) -> dict[str, str]:
    return _label_map(_meta(obj).get("labels"))


def _label_map(raw: Any) -> dict[str, str]:
    labels = raw or {}
    if not isinstance(labels, _MAP):
        return {}
    return {_shared(str(k)): _shared(str(v)) for k, v in labels.items()}


def selector(raw: Any) -> model.LabelSelector:
    """A LabelSelector from its API form; raises SelectorError when malformed."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise SelectorError("selector is not an object")
    labels = raw.get("matchLabels") or {}
    if not isinstance(labels, Mapping):
        raise SelectorError("matchLabels is not an object")
    exprs = raw.get("matchExpressions") or []
    if not isinstance(exprs, list):
        raise SelectorError("matchExpressions is not a list")
    reqs: list[model.SelectorRequirement] = []
    for expr in exprs:
        if not isinstance(expr, Mapping) or not isinstance(expr.get("key"), str):
            raise SelectorError("matchExpressions entry without a key")
        op = expr.get("operator")
        values = expr.get("values") or []
        if op not in _OPERATORS:
            raise SelectorError(f"unknown operator {op!r}")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise SelectorError("values must be a list of strings")
        if op in ("In", "NotIn") and not values:
            raise SelectorError(f"operator {op} needs values")
        if op in ("Exists", "DoesNotExist") and values:
            raise SelectorError(f"operator {op} takes no values")
        reqs.append(model.SelectorRequirement(expr["key"], op, tuple(sorted(values))))
    return model.LabelSelector(
        match_labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        match_expressions=tuple(reqs),
    )


def pod(obj: Raw) -> model.Pod:
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
    return pod_of(
        namespace=meta.get("namespace"),
        name=meta.get("name"),
        uid=meta.get("uid"),
        resource_version=meta.get("resourceVersion"),
        labels=meta.get("labels"),
        annotations=meta.get("annotations"),
        deleting=meta.get("deletionTimestamp") is not None,
        owners=meta.get("ownerReferences"),
        node=spec.get("nodeName"),
        host_network=spec.get("hostNetwork"),
        ports=[c.get("ports") if isinstance(c, _MAP) else None for c in containers],
        phase=status.get("phase"),
        pod_ips=status.get("podIPs"),
        pod_ip=status.get("podIP"),
    )


# An IPv4 address as `ipaddress` writes it (no leading zeros, each octet <= 255): kept as is.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_V4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def _address(text: str) -> str | None:
    """`text` as `ipaddress` writes the address, or None when it is not one."""
    if _CANONICAL_V4.fullmatch(text):
        return text
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def pod_of(
    *,
    namespace: Any,
    name: Any,
    uid: Any,
    resource_version: Any,
    labels: Any,
    annotations: Any,
    deleting: bool,
    owners: Any,
    node: Any,
    host_network: Any,
    ports: list[Any],
    phase: Any,
    pod_ips: Any,
    pod_ip: Any,
) -> model.Pod:
    """A pod from the values of its fields as the API gave them (`ports`: each container's
    `ports`, init containers after the others), whatever their types: `pod` reads them off a
    dict, `agent.k8s.podwire` off the JSON bytes, and both get the same model."""
    ips: list[str] = []
    for entry in pod_ips or []:
        ip = entry.get("ip") if isinstance(entry, _MAP) else None
        if isinstance(ip, str):
            ips.append(ip)
    if not ips and isinstance(pod_ip, str) and pod_ip:
        ips.append(pod_ip)
    valid_ips = [a for a in map(_address, ips) if a is not None]
    container_ports: list[model.ContainerPort] = []
    for declared in ports:
        for p in declared or []:
            number = p.get("containerPort") if isinstance(p, _MAP) else None
            if isinstance(number, int) and 0 < number < 65536:
                port_name = p.get("name")
                protocol = str(p.get("protocol") or "TCP")
                container_ports.append(
                    _container_port(
                        number, protocol, port_name if isinstance(port_name, str) else None
                    )
                )
    node = node or None
    shared_labels = _label_map(labels)
    controller = _controller(owners)
    return model.Pod(
        namespace=_shared(str(namespace or "default")),
        name=str(name or ""),
        uid=str(uid or ""),
        labels=shared_labels,
        node_name=_shared(node) if isinstance(node, str) else node,
        host_network=bool(host_network),
        ips=tuple(dict.fromkeys(valid_ips)),
        container_ports=tuple(container_ports),
        phase=_shared(str(phase or "")),
        terminating=deleting,
        resource_version=str(resource_version or ""),
        workload=_shared(_workload(controller, shared_labels)),
        annotations=_annotation_map(annotations),
        workload_kind=_shared(_workload_kind(controller, shared_labels)),
    )


# What `pod` reads of a raw pod; `slim_pod` keeps only these.
_POD_KEEP = {
    "metadata": (
        "name",
        "namespace",
        "uid",
        "labels",
        "annotations",
        "resourceVersion",
        "deletionTimestamp",
        "ownerReferences",
    ),
    "spec": ("nodeName", "hostNetwork", "containers", "initContainers"),
    "status": ("phase", "podIP", "podIPs"),
}


def slim_pod(obj: Raw) -> dict[str, Any]:
    """`obj` with only the parts `pod` reads: a pod as the API server returns it carries
    managedFields, statuses, volumes, probes and env (about 7 KB of JSON, several times that
    as Python objects), which a LIST of thousands would otherwise hold all at once. Shapes are
    kept as they come (a malformed field stays malformed for `pod` to report)."""
    out: dict[str, Any] = dict(obj)
    for part, keys in _POD_KEEP.items():
        value = obj.get(part)
        if isinstance(value, Mapping):
            out[part] = {k: value[k] for k in keys if k in value}
    spec = out.get("spec")
    if isinstance(spec, dict):
        for field in ("containers", "initContainers"):
            containers = spec.get(field)
            if isinstance(containers, list):
                spec[field] = [
                    {k: c[k] for k in ("name", "ports") if k in c} if isinstance(c, Mapping) else c
                    for c in containers
                ]
    return out


def _controller(owners: Any) -> Mapping[str, Any] | None:
    """The ownerReference that names the pod's workload: the controller, else the first."""
    if not isinstance(owners, list):
        return None
    valid = [o for o in owners if isinstance(o, _MAP) and isinstance(o.get("name"), str)]
    controllers = [o for o in valid if o.get("controller") is True] or valid
    return controllers[0] if controllers else None


def workload_kind_of(meta: Raw, labels: Mapping[str, str]) -> str:
    """The kind of the workload `workload_of` names: `Deployment` for a ReplicaSet whose name
    carries the pod's template hash, else the controller's own kind; "" for a bare pod."""
    return _workload_kind(_controller(meta.get("ownerReferences")), labels)


def _workload_kind(owner: Mapping[str, Any] | None, labels: Mapping[str, str]) -> str:
    if owner is None:
        return ""
    kind = str(owner.get("kind") or "")
    pod_hash = labels.get("pod-template-hash", "")
    if kind == "ReplicaSet" and pod_hash and str(owner["name"]).endswith("-" + pod_hash):
        return "Deployment"
    return kind


def workload_of(meta: Raw, labels: Mapping[str, str]) -> str:
    """The name of the workload owning a pod, from its controller ownerReference.

    A ReplicaSet made by a Deployment is named `<deployment>-<pod-template-hash>` and the pod
    carries the hash as its `pod-template-hash` label: the suffix is stripped, so the workload
    is the Deployment. StatefulSet, DaemonSet, Job (a CronJob's Job keeps its own name) and any
    other controller give their own name. A bare pod gives "": pod names never become labels.
    """
    return _workload(_controller(meta.get("ownerReferences")), labels)


def _workload(owner: Mapping[str, Any] | None, labels: Mapping[str, str]) -> str:
    if owner is None:
        return ""
    name = str(owner["name"])
    pod_hash = labels.get("pod-template-hash", "")
    if owner.get("kind") == "ReplicaSet" and pod_hash and name.endswith("-" + pod_hash):
        return name[: -len(pod_hash) - 1]
    return name


def _annotation_map(raw: Any) -> dict[str, str]:
    """String annotations only (anything else is not a valid annotation value)."""
    raw = raw or {}
    if not isinstance(raw, _MAP):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, str)}


def namespace(obj: Raw) -> model.Namespace:
    meta = _meta(obj)
    return model.Namespace(
        name=str(meta.get("name") or ""),
        labels=_labels(obj),
        resource_version=str(meta.get("resourceVersion") or ""),
    )


NODE_ADDRESS_TYPES = ("InternalIP", "ExternalIP")


def node(obj: Raw) -> model.Node:
    """A Node with its InternalIP/ExternalIP addresses (hostnames and bad entries skipped)."""
    meta, status = _meta(obj), obj.get("status") or {}
    addresses: list[str] = []
    for entry in status.get("addresses") or []:
        if not isinstance(entry, Mapping) or entry.get("type") not in NODE_ADDRESS_TYPES:
            continue
        try:
            addresses.append(str(ipaddress.ip_address(str(entry.get("address")))))
        except ValueError:
            continue
    return model.Node(
        name=str(meta.get("name") or ""),
        addresses=tuple(sorted(set(addresses))),
        labels=_labels(obj),
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def _cidr(text: Any) -> str:
    if not isinstance(text, str):
        raise ValueError("cidr is not a string")
    return str(ipaddress.ip_network(text, strict=False))


def _peer(raw: Any, where: str, errors: list[str]) -> model.Peer:
    if not isinstance(raw, Mapping):
        errors.append(f"{where}: peer is not an object")
        return model.Peer(invalid=True)
    block = raw.get("ipBlock")
    has_selectors = "podSelector" in raw or "namespaceSelector" in raw
    if block is not None:
        if has_selectors:
            errors.append(f"{where}: ipBlock together with selectors")
            return model.Peer(invalid=True)
        try:
            cidr = _cidr(block.get("cidr") if isinstance(block, Mapping) else None)
            net = ipaddress.ip_network(cidr)
            excepts = []
            for exc in block.get("except") or []:
                sub = ipaddress.ip_network(_cidr(exc))
                if sub.version != net.version or not sub.subnet_of(net):  # type: ignore[arg-type]
                    raise ValueError(f"except {exc} is not inside {cidr}")
                excepts.append(str(sub))
        except (ValueError, TypeError, AttributeError) as exc:
            errors.append(f"{where}: invalid ipBlock: {exc}")
            return model.Peer(invalid=True)
        return model.Peer(ip_block=model.IPBlock(cidr=cidr, excepts=tuple(sorted(excepts))))
    if not has_selectors:
        errors.append(f"{where}: peer has neither selectors nor ipBlock")
        return model.Peer(invalid=True)
    try:
        pods = selector(raw["podSelector"]) if "podSelector" in raw else None
        nss = selector(raw["namespaceSelector"]) if "namespaceSelector" in raw else None
    except SelectorError as exc:
        errors.append(f"{where}: invalid selector: {exc}")
        return model.Peer(invalid=True)
    return model.Peer(pod_selector=pods, namespace_selector=nss)


def _port(raw: Any, where: str, errors: list[str]) -> model.PolicyPort:
    if not isinstance(raw, Mapping):
        errors.append(f"{where}: port is not an object")
        return model.PolicyPort(invalid=True)
    protocol = raw.get("protocol") or "TCP"
    port = raw.get("port")
    end = raw.get("endPort")
    problem = None
    if protocol not in model.PROTOCOLS:
        problem = f"unknown protocol {protocol!r}"
    elif isinstance(port, bool) or not (port is None or isinstance(port, int | str)):
        problem = f"invalid port {port!r}"
    elif isinstance(port, int) and not 0 < port < 65536:
        problem = f"port {port} out of range"
    elif isinstance(port, str) and port.isdigit():
        port = int(port)
        if not 0 < port < 65536:
            problem = f"port {port} out of range"
    elif isinstance(port, str) and not _SVC_NAME.match(port):
        problem = f"invalid port name {port!r}"
    if problem is None and end is not None:
        if not isinstance(port, int) or isinstance(end, bool) or not isinstance(end, int):
            problem = "endPort needs a numeric port"
        elif not port <= end < 65536:
            problem = f"endPort {end} below port {port} or out of range"
    if problem:
        errors.append(f"{where}: {problem}")
        return model.PolicyPort(protocol=str(protocol), invalid=True)
    return model.PolicyPort(protocol=str(protocol), port=port, end_port=end)


def _rules(raw: Any, kind: str, peer_key: str, errors: list[str]) -> tuple[model.PolicyRule, ...]:
    rules: list[model.PolicyRule] = []
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors.append(f"{kind}: not a list")
        # A broken rule list allows nothing; the direction stays isolated as declared.
        return ()
    for i, rule in enumerate(raw):
        where = f"{kind}[{i}]"
        if not isinstance(rule, Mapping):
            errors.append(f"{where}: rule is not an object")
            continue
        peers_raw = rule.get(peer_key) or []
        ports_raw = rule.get("ports") or []
        if not isinstance(peers_raw, list) or not isinstance(ports_raw, list):
            errors.append(f"{where}: {peer_key}/ports not lists")
            continue
        peers = tuple(_peer(p, f"{where}.{peer_key}[{j}]", errors) for j, p in enumerate(peers_raw))
        ports = tuple(_port(p, f"{where}.ports[{j}]", errors) for j, p in enumerate(ports_raw))
        rules.append(model.PolicyRule(peers=peers, ports=ports))
    return tuple(rules)


def network_policy(obj: Raw) -> model.NetworkPolicy:
    meta = _meta(obj)
    spec = obj.get("spec") or {}
    errors: list[str] = []
    if not isinstance(spec, Mapping):  # a fuzzed shape
        errors.append("spec is not an object; the policy selects no pod")
        spec = {"podSelector": []}
    pod_selector: model.LabelSelector | None
    try:
        pod_selector = selector(spec.get("podSelector"))
    except SelectorError as exc:
        errors.append(f"podSelector: {exc}; the policy selects no pod")
        pod_selector = None
    ingress = _rules(spec.get("ingress"), "ingress", "from", errors)
    egress = _rules(spec.get("egress"), "egress", "to", errors)
    types_raw = spec.get("policyTypes")
    if types_raw and not isinstance(types_raw, list):
        errors.append(f"policyTypes: not a list: {types_raw!r}; using the defaults")
        types_raw = None
    if types_raw:
        types = [t for t in types_raw if t in ("Ingress", "Egress")]
        if len(types) != len(types_raw):
            errors.append(f"policyTypes: unknown entries in {types_raw!r}")
    else:
        types = ["Ingress"] + (["Egress"] if spec.get("egress") is not None else [])
    return model.NetworkPolicy(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        pod_selector=pod_selector,
        ingress=ingress,
        egress=egress,
        policy_types=tuple(sorted(set(types))),
        errors=tuple(errors),
        resource_version=str(meta.get("resourceVersion") or ""),
    )


SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def _ips(values: Any, where: str, errors: list[str]) -> list[str]:
    out: list[str] = []
    for value in values if isinstance(values, list) else []:
        try:
            out.append(str(ipaddress.ip_address(str(value))))
        except ValueError:
            errors.append(f"{where}: invalid IP {value!r} ignored")
    return out


def service(obj: Raw) -> model.Service:
    """A Service with its virtual addresses and ports; invalid parts are dropped and listed.

    Dropping is the safe side here: a Service address only ever widens egress, so an entry
    that cannot be read opens nothing.
    """
    meta = _meta(obj)
    spec = obj.get("spec") if isinstance(obj.get("spec"), Mapping) else {}
    status = obj.get("status") if isinstance(obj.get("status"), Mapping) else {}
    assert isinstance(spec, Mapping) and isinstance(status, Mapping)
    errors: list[str] = []
    kind = str(spec.get("type") or "ClusterIP")
    headless = spec.get("clusterIP") == "None"
    cluster_ips: list[str] = []
    external: list[str] = []
    if kind != "ExternalName" and not headless:
        raw_ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        cluster_ips = _ips(raw_ips, "spec.clusterIPs", errors)
        external = _ips(spec.get("externalIPs"), "spec.externalIPs", errors)
        load_balancer = status.get("loadBalancer")
        ingress = load_balancer.get("ingress") if isinstance(load_balancer, Mapping) else None
        lb_ips = [e.get("ip") for e in ingress or [] if isinstance(e, Mapping) and e.get("ip")]
        external += _ips(lb_ips, "status.loadBalancer.ingress", errors)
    ports = _service_ports(spec.get("ports"), errors)
    selector_raw = spec.get("selector")
    selector_labels = (
        {str(k): str(v) for k, v in selector_raw.items()}
        if isinstance(selector_raw, Mapping) and selector_raw
        else None
    )
    return model.Service(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        type=kind,
        cluster_ips=tuple(dict.fromkeys(cluster_ips)),
        external_ips=tuple(sorted(set(external))),
        ports=tuple(ports),
        selector=selector_labels,
        headless=headless,
        internal_traffic_local=spec.get("internalTrafficPolicy") == "Local",
        errors=tuple(errors),
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def _service_ports(raw_ports: Any, errors: list[str]) -> list[model.ServicePort]:
    """The Service's valid ports; each invalid one is dropped and listed in `errors`."""
    ports: list[model.ServicePort] = []
    for i, raw in enumerate(raw_ports if isinstance(raw_ports, list) else []):
        where = f"spec.ports[{i}]"
        if not isinstance(raw, Mapping):
            errors.append(f"{where}: not an object")
            continue
        number, protocol = raw.get("port"), raw.get("protocol") or "TCP"
        if isinstance(number, bool) or not isinstance(number, int) or not 0 < number < 65536:
            errors.append(f"{where}: invalid port {number!r}")
            continue
        if protocol not in model.PROTOCOLS:
            errors.append(f"{where}: unknown protocol {protocol!r}")
            continue
        target = raw.get("targetPort", number)
        if isinstance(target, str) and target.isdigit():
            target = int(target)
        if isinstance(target, bool) or not isinstance(target, int | str):
            errors.append(f"{where}: invalid targetPort {target!r}")
            target = None
        elif isinstance(target, int) and not 0 < target < 65536:
            errors.append(f"{where}: targetPort {target} out of range")
            target = None
        name = raw.get("name") if isinstance(raw.get("name"), str) else ""
        ports.append(model.ServicePort(number, str(protocol), str(name), target))
    return ports


def _endpoints(
    raw_endpoints: Any, address_type: str, namespace_name: str, errors: list[str]
) -> list[model.Endpoint]:
    """The slice's endpoints; addresses of the wrong family or unparsable ones are dropped."""
    endpoints: list[model.Endpoint] = []
    for i, raw in enumerate(raw_endpoints if isinstance(raw_endpoints, list) else []):
        where = f"endpoints[{i}]"
        if not isinstance(raw, Mapping):
            errors.append(f"{where}: not an object")
            continue
        addresses = []
        for address in _ips(raw.get("addresses"), f"{where}.addresses", errors):
            family = "IPv6" if ":" in address else "IPv4"
            if family != address_type:
                errors.append(f"{where}: {address} is not an {address_type} address")
                continue
            addresses.append(address)
        conditions = raw.get("conditions") if isinstance(raw.get("conditions"), Mapping) else {}
        assert isinstance(conditions, Mapping)
        ready = conditions.get("ready")
        ref = raw.get("targetRef") if isinstance(raw.get("targetRef"), Mapping) else {}
        assert isinstance(ref, Mapping)
        target = None
        if ref.get("kind") == "Pod" and ref.get("name"):
            target = f"{ref.get('namespace') or namespace_name}/{ref['name']}"
        node_name = raw.get("nodeName")
        endpoints.append(
            model.Endpoint(
                addresses=tuple(addresses),
                # The API says an unknown (absent) readiness is to be read as ready.
                ready=ready is None or ready is True,
                node_name=str(node_name) if isinstance(node_name, str) and node_name else None,
                target_pod=target,
            )
        )
    return endpoints


def endpoint_slice(obj: Raw) -> model.EndpointSlice:
    """An EndpointSlice; addresses of the wrong family or unparsable ones are dropped."""
    meta = _meta(obj)
    namespace_name = str(meta.get("namespace") or "default")
    errors: list[str] = []
    address_type = str(obj.get("addressType") or "")
    endpoints = _endpoints(obj.get("endpoints"), address_type, namespace_name, errors)
    ports: list[model.EndpointPort] = []
    raw_ports = obj.get("ports")
    for i, raw in enumerate(raw_ports if isinstance(raw_ports, list) else []):
        if not isinstance(raw, Mapping):
            errors.append(f"ports[{i}]: not an object")
            continue
        number = raw.get("port")
        if number is not None and (
            isinstance(number, bool) or not isinstance(number, int) or not 0 < number < 65536
        ):
            errors.append(f"ports[{i}]: invalid port {number!r}")
            number = None
        name = raw.get("name") if isinstance(raw.get("name"), str) else ""
        ports.append(model.EndpointPort(number, str(raw.get("protocol") or "TCP"), str(name)))
    return model.EndpointSlice(
        namespace=namespace_name,
        name=str(meta.get("name") or ""),
        service=_labels(obj).get(SERVICE_NAME_LABEL, ""),
        address_type=address_type,
        endpoints=tuple(endpoints),
        ports=tuple(ports),
        errors=tuple(errors),
        resource_version=str(meta.get("resourceVersion") or ""),
    )
