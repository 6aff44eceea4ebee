"""API objects of the network-policy-api -> `agent.tiers.model`. Pure.

The single place that reads ClusterNetworkPolicy (v1alpha2), AdminNetworkPolicy and
BaselineAdminNetworkPolicy (v1alpha1) dictionaries. As for NetworkPolicy, an invalid part
(bad CIDR, unknown action, malformed selector, a field this agent cannot enforce) is kept as an
entry that matches nothing and named in `errors`, so it is reported and never widens anything.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from agent import model
from agent.k8s import convert
from agent.tiers import model as tiers

Raw = Mapping[str, Any]

_PROTOCOL_KEYS = {"tcp": "TCP", "udp": "UDP", "sctp": "SCTP"}


def _selector(raw: Any, where: str, errors: list[str]) -> model.LabelSelector | None:
    try:
        return convert.selector(raw)
    except convert.SelectorError as exc:
        errors.append(f"{where}: invalid selector: {exc}")
        return None


def _namespaced_pods(
    raw: Any, ns_key: str, where: str, errors: list[str]
) -> tiers.NamespacedPods | None:
    """`pods`: {namespaceSelector, podSelector} (v1alpha2 and v1alpha1 subjects) or, for
    v1alpha1 peers, {namespaces: {namespaceSelector}, podSelector} (`ns_key` says which)."""
    if not isinstance(raw, Mapping):
        errors.append(f"{where}: not an object")
        return None
    ns_raw = raw.get(ns_key)
    if ns_key == "namespaces":
        ns_raw = _v1alpha1_namespaces(ns_raw, f"{where}.namespaces", errors)
        if ns_raw is None:
            return None
    namespaces = _selector(ns_raw, f"{where}.{ns_key}", errors)
    pods = _selector(raw.get("podSelector"), f"{where}.podSelector", errors)
    if namespaces is None or pods is None:
        return None
    return tiers.NamespacedPods(namespace_selector=namespaces, pod_selector=pods)


def _v1alpha1_namespaces(raw: Any, where: str, errors: list[str]) -> Any:
    """v1alpha1's NamespacedPeer: a namespaceSelector, or sameLabels / notSameLabels, which
    podseg does not enforce (None: the peer matches nothing)."""
    if not isinstance(raw, Mapping):
        errors.append(f"{where}: not an object")
        return None
    if raw.get("sameLabels") or raw.get("notSameLabels"):
        errors.append(
            f"{where}: sameLabels/notSameLabels are not supported; the peer matches nothing"
        )
        return None
    return raw.get("namespaceSelector") or {}


def _subject(raw: Any, errors: list[str]) -> tiers.Subject:
    if not isinstance(raw, Mapping) or ("namespaces" in raw) == ("pods" in raw):
        errors.append("subject: exactly one of namespaces and pods must be set; selects no pod")
        return tiers.Subject()
    if "namespaces" in raw:
        selector = _selector(raw["namespaces"], "subject.namespaces", errors)
        return tiers.Subject(namespaces=selector)
    return tiers.Subject(
        pods=_namespaced_pods(raw["pods"], "namespaceSelector", "subject.pods", errors)
    )


def _networks(raw: Any, where: str, errors: list[str]) -> tuple[str, ...] | None:
    if not isinstance(raw, list) or not raw:
        errors.append(f"{where}: not a non-empty list of CIDRs")
        return None
    out: list[str] = []
    for cidr in raw:
        try:
            if not isinstance(cidr, str) or "/" not in cidr:
                raise ValueError(f"{cidr!r} is not a CIDR")
            out.append(str(ipaddress.ip_network(cidr, strict=False)))
        except ValueError as exc:
            errors.append(f"{where}: invalid CIDR: {exc}")
            return None
    return tuple(sorted(set(out)))


_PEER_FIELDS = ("namespaces", "pods", "nodes", "networks", "domainNames")


def _peer(raw: Any, where: str, errors: list[str], v1alpha1: bool) -> tiers.Peer:
    if not isinstance(raw, Mapping):
        errors.append(f"{where}: peer is not an object")
        return tiers.Peer(invalid=True)
    present = [k for k in _PEER_FIELDS if raw.get(k) is not None]
    if not present:
        errors.append(f"{where}: no known peer field set")
        return tiers.Peer(unknown=True)
    if len(present) > 1:
        errors.append(f"{where}: more than one of {', '.join(present)}")
        return tiers.Peer(invalid=True)
    field = present[0]
    value = raw[field]
    if field == "domainNames":
        errors.append(f"{where}: domainNames are not supported; the peer matches nothing")
        return tiers.Peer(invalid=True)
    if field == "networks":
        networks = _networks(value, f"{where}.networks", errors)
        return tiers.Peer(networks=networks) if networks else tiers.Peer(invalid=True)
    if field == "pods":
        ns_key = "namespaces" if v1alpha1 else "namespaceSelector"
        pods = _namespaced_pods(value, ns_key, f"{where}.pods", errors)
        return tiers.Peer(pods=pods) if pods else tiers.Peer(invalid=True)
    if field == "namespaces" and v1alpha1:
        value = _v1alpha1_namespaces(value, f"{where}.namespaces", errors)
        if value is None:
            return tiers.Peer(invalid=True)
    selector = _selector(value, f"{where}.{field}", errors)
    if selector is None:
        return tiers.Peer(invalid=True)
    if field == "nodes":
        return tiers.Peer(nodes=selector)
    return tiers.Peer(namespaces=selector)


def _port_number(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        return None
    return value


def _range(protocol: str, raw: Any, where: str, errors: list[str]) -> tiers.Port:
    start = _port_number(raw.get("start")) if isinstance(raw, Mapping) else None
    end = _port_number(raw.get("end")) if isinstance(raw, Mapping) else None
    if start is None or end is None or end < start:
        errors.append(f"{where}: invalid port range {raw!r}")
        return tiers.Port(protocol=protocol, invalid=True)
    return tiers.Port(protocol=protocol, start=start, end=end)


def _one_of(raw: Any, keys: tuple[str, ...], where: str, errors: list[str]) -> str | None:
    """The one key of `keys` a port entry sets; None (and an error) when it is not an object
    or sets none or several."""
    if not isinstance(raw, Mapping):
        errors.append(f"{where}: not an object")
        return None
    present = [k for k in keys if raw.get(k) is not None]
    if len(present) != 1:
        errors.append(f"{where}: exactly one of {', '.join(keys)}")
        return None
    return present[0]


def _named(name: Any, key: str, where: str, errors: list[str]) -> tiers.Port:
    """A named container port, of whatever protocol the destination pod declares it with."""
    if not isinstance(name, str) or not name:
        errors.append(f"{where}: invalid {key} {name!r}")
        return tiers.Port(invalid=True)
    return tiers.Port(protocol="", named=name)


def _protocol(raw: Any, where: str, errors: list[str]) -> tiers.Port:
    """A v1alpha2 `protocols` entry: tcp / udp / sctp {destinationPort} or
    destinationNamedPort."""
    key = _one_of(raw, (*_PROTOCOL_KEYS, "destinationNamedPort"), where, errors)
    if key is None:
        return tiers.Port(invalid=True)
    if key == "destinationNamedPort":
        return _named(raw[key], key, where, errors)
    protocol = _PROTOCOL_KEYS[key]
    body = raw[key]
    port = body.get("destinationPort") if isinstance(body, Mapping) else None
    if port is None:
        return tiers.Port(protocol=protocol)
    if not isinstance(port, Mapping):
        errors.append(f"{where}: destinationPort is not an object")
        return tiers.Port(protocol=protocol, invalid=True)
    if port.get("range") is not None:
        return _range(protocol, port["range"], f"{where}.destinationPort.range", errors)
    number = _port_number(port.get("number"))
    if number is None:
        errors.append(f"{where}: invalid destinationPort {port!r}")
        return tiers.Port(protocol=protocol, invalid=True)
    return tiers.Port(protocol=protocol, start=number, end=number)


def _v1alpha1_port(raw: Any, where: str, errors: list[str]) -> tiers.Port:
    """A v1alpha1 `ports` entry: portNumber {protocol, port}, namedPort or portRange."""
    key = _one_of(raw, ("portNumber", "namedPort", "portRange"), where, errors)
    if key is None:
        return tiers.Port(invalid=True)
    if key == "namedPort":
        return _named(raw[key], key, where, errors)
    body = raw[key]
    protocol = (body.get("protocol") if isinstance(body, Mapping) else None) or "TCP"
    if protocol not in model.PROTOCOLS:
        errors.append(f"{where}: unknown protocol {protocol!r}")
        return tiers.Port(invalid=True)
    if key == "portRange":
        return _range(protocol, body, f"{where}.portRange", errors)
    number = _port_number(body.get("port") if isinstance(body, Mapping) else None)
    if number is None:
        errors.append(f"{where}: invalid portNumber {body!r}")
        return tiers.Port(protocol=protocol, invalid=True)
    return tiers.Port(protocol=protocol, start=number, end=number)


def _rules(
    raw: Any,
    direction: str,
    peer_key: str,
    actions: Mapping[str, str],
    port_key: str,
    port_of: Callable[[Any, str, list[str]], tiers.Port],
    errors: list[str],
    v1alpha1: bool,
) -> tuple[tiers.Rule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors.append(f"{direction}: not a list; no rule")
        return ()
    rules: list[tiers.Rule] = []
    for i, rule in enumerate(raw):
        where = f"{direction}[{i}]"
        if not isinstance(rule, Mapping):
            errors.append(f"{where}: rule is not an object; it matches nothing")
            rules.append(tiers.Rule(name=where, action=""))
            continue
        name = str(rule.get("name") or where)
        action = actions.get(str(rule.get("action")), "")
        if not action:
            errors.append(
                f"{where}: unknown action {rule.get('action')!r}; the rule matches nothing"
            )
        peers_raw = rule.get(peer_key)
        ports_raw = rule.get(port_key) or []
        if not isinstance(peers_raw, list) or not peers_raw:
            errors.append(f"{where}: {peer_key} must be a non-empty list; the rule matches nothing")
            peers_raw = []
        if not isinstance(ports_raw, list):
            errors.append(f"{where}: {port_key} is not a list; the rule matches nothing")
            ports_raw, peers_raw = [], []
        peers = tuple(
            _peer(p, f"{where}.{peer_key}[{j}]", errors, v1alpha1) for j, p in enumerate(peers_raw)
        )
        ports = tuple(
            port_of(p, f"{where}.{port_key}[{j}]", errors) for j, p in enumerate(ports_raw)
        )
        rules.append(tiers.Rule(name=name, action=action, peers=peers, ports=ports))
    return tuple(rules)


def _meta(obj: Raw) -> Raw:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _spec(obj: Raw, errors: list[str]) -> Raw:
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        errors.append("spec is not an object; the policy selects no pod")
        return {}
    return spec


def _priority(raw: Any, errors: list[str]) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 1000:
        errors.append(f"priority {raw!r} is not in 0..1000; the policy selects no pod")
        return -1
    return raw


_V1ALPHA2_ACTIONS = {a: a for a in tiers.ACTIONS}
_ANP_ACTIONS = {"Allow": tiers.ACCEPT, "Deny": tiers.DENY, "Pass": tiers.PASS}
_BANP_ACTIONS = {"Allow": tiers.ACCEPT, "Deny": tiers.DENY}


def _policy(
    obj: Raw, kind: str, tier: str, priority: int, spec: Raw, errors: list[str], v1alpha1: bool
) -> tiers.ClusterPolicy:
    if kind == tiers.CLUSTER_NETWORK_POLICY:
        actions, port_key, port_of = _V1ALPHA2_ACTIONS, "protocols", _protocol
    else:
        actions = _BANP_ACTIONS if tier == tiers.BASELINE else _ANP_ACTIONS
        port_key, port_of = "ports", _v1alpha1_port
    subject = _subject(spec.get("subject"), errors)
    if priority < 0:
        subject = tiers.Subject()
    ingress = _rules(
        spec.get("ingress"), "ingress", "from", actions, port_key, port_of, errors, v1alpha1
    )
    egress = _rules(
        spec.get("egress"), "egress", "to", actions, port_key, port_of, errors, v1alpha1
    )
    meta = _meta(obj)
    return tiers.ClusterPolicy(
        kind=kind,
        name=str(meta.get("name") or ""),
        tier=tier,
        priority=max(priority, 0),
        subject=subject,
        ingress=ingress,
        egress=egress,
        errors=tuple(errors),
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def cluster_network_policy(obj: Raw) -> tiers.ClusterPolicy:
    """A policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy."""
    errors: list[str] = []
    spec = _spec(obj, errors)
    tier = spec.get("tier")
    priority = _priority(spec.get("priority"), errors)
    if tier not in tiers.TIERS:
        errors.append(f"tier {tier!r} is neither Admin nor Baseline; the policy selects no pod")
        tier, priority = tiers.ADMIN, -1
    return _policy(obj, tiers.CLUSTER_NETWORK_POLICY, str(tier), priority, spec, errors, False)


def admin_network_policy(obj: Raw) -> tiers.ClusterPolicy:
    """A policy.networking.k8s.io/v1alpha1 AdminNetworkPolicy (the Admin tier)."""
    errors: list[str] = []
    spec = _spec(obj, errors)
    priority = _priority(spec.get("priority"), errors)
    return _policy(obj, tiers.ADMIN_NETWORK_POLICY, tiers.ADMIN, priority, spec, errors, True)


def baseline_admin_network_policy(obj: Raw) -> tiers.ClusterPolicy:
    """A policy.networking.k8s.io/v1alpha1 BaselineAdminNetworkPolicy (the Baseline tier,
    after every Baseline ClusterNetworkPolicy)."""
    errors: list[str] = []
    spec = _spec(obj, errors)
    kind = tiers.BASELINE_ADMIN_NETWORK_POLICY
    return _policy(obj, kind, tiers.BASELINE, tiers.BANP_PRIORITY, spec, errors, True)


def priority_conflicts(policies: list[tiers.ClusterPolicy]) -> dict[str, str]:
    """Policies sharing a tier and priority with another (the API leaves their order
    undefined; podseg orders them by kind and name): key -> a one-line warning."""
    seen: dict[tuple[str, int], list[str]] = {}
    for policy in policies:
        seen.setdefault((policy.tier, policy.priority), []).append(policy.key)
    out: dict[str, str] = {}
    for (tier, priority), keys in seen.items():
        if len(keys) > 1:
            for key in keys:
                others = ", ".join(k for k in sorted(keys) if k != key)
                out[key] = f"{tier} tier priority {priority} shared with {others}; ordered by name"
    return out
