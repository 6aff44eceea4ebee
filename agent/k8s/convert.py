"""Raw API objects (JSON dicts) -> frozen model objects, validating as it goes. Pure.

The API server validates NetworkPolicies, but an older or buggy server, or a client that
bypassed validation, can still hand us nonsense. Every invalid part becomes an entry that
matches nothing (never an entry that matches everything) and is described in `errors`, so
the reconciler can log and count it while the valid parts stay enforced.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from agent import model

_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")

Raw = Mapping[str, Any]


class SelectorError(ValueError):
    """A label selector that cannot be evaluated."""


def _meta(obj: Raw) -> Raw:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _labels(obj: Raw) -> dict[str, str]:
    labels = _meta(obj).get("labels") or {}
    if not isinstance(labels, Mapping):
        return {}
    return {str(k): str(v) for k, v in labels.items()}


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
    ips: list[str] = []
    for entry in status.get("podIPs") or []:
        ip = entry.get("ip") if isinstance(entry, Mapping) else None
        if isinstance(ip, str):
            ips.append(ip)
    if not ips and isinstance(status.get("podIP"), str) and status["podIP"]:
        ips.append(status["podIP"])
    valid_ips: list[str] = []
    for ip in ips:
        try:
            valid_ips.append(str(ipaddress.ip_address(ip)))
        except ValueError:
            continue
    ports: list[model.ContainerPort] = []
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for p in container.get("ports") or [] if isinstance(container, Mapping) else []:
            number = p.get("containerPort") if isinstance(p, Mapping) else None
            if isinstance(number, int) and 0 < number < 65536:
                ports.append(
                    model.ContainerPort(
                        port=number,
                        protocol=str(p.get("protocol") or "TCP"),
                        name=p.get("name") if isinstance(p.get("name"), str) else None,
                    )
                )
    return model.Pod(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        labels=_labels(obj),
        node_name=spec.get("nodeName") or None,
        host_network=bool(spec.get("hostNetwork")),
        ips=tuple(dict.fromkeys(valid_ips)),
        container_ports=tuple(ports),
        phase=str(status.get("phase") or ""),
        terminating=meta.get("deletionTimestamp") is not None,
        resource_version=str(meta.get("resourceVersion") or ""),
        annotations=_annotations(obj),
    )


def _annotations(obj: Raw) -> dict[str, str]:
    """String annotations only (anything else is not a valid annotation value)."""
    raw = _meta(obj).get("annotations") or {}
    if not isinstance(raw, Mapping):
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
    if not isinstance(spec, Mapping):  # found by tests/unit/test_properties.py (fuzz)
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
