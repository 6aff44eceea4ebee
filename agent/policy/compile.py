"""Compile the NetworkPolicies of a snapshot into the desired `PodRuleset` of one local pod.

This is where Kubernetes NetworkPolicy v1 semantics live: which policies select the pod and
isolate which direction, how peers (podSelector, namespaceSelector, both, ipBlock) and ports
(numbers, endPort, named container ports) resolve to addresses and ports. It is pure and
canonical: the result depends only on the snapshot, never on the order of its parts, and
anything invalid matches nothing (it can isolate a pod, never open it up).

Named ports: on ingress they resolve against the local pod's container ports. On egress they
resolve per destination pod, against that pod's container ports, for every destination pod
the rule's peers cover -- pods picked by selectors, known pods whose IPs fall inside an
ipBlock, or every known pod for a rule without peers. Addresses that belong to no known pod
(external hosts, nodes) never match a named port, as in upstream implementations that look
the destination pod up by IP.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from agent import model, selectors
from agent.policy import intervals, ruleset
from agent.policy import mode as policy_mode
from agent.policy import services as policy_services

IMPLICIT_NAMESPACE_LABEL = "kubernetes.io/metadata.name"
FINISHED_PHASES = frozenset({"Succeeded", "Failed"})
_INGRESS = ruleset.Direction.INGRESS
_EGRESS = ruleset.Direction.EGRESS


@dataclasses.dataclass(frozen=True)
class PeerPod:
    """A pod that can be a policy peer, with its parsed addresses."""

    pod: model.Pod
    addrs: tuple[ruleset.AddrRange, ...]


@dataclasses.dataclass(frozen=True)
class ClusterIndex:
    """The peer-relevant part of a snapshot, built once and shared by many `compile_indexed`."""

    namespaces: Mapping[str, model.Namespace]
    peers: tuple[PeerPod, ...]
    by_namespace: Mapping[str, tuple[PeerPod, ...]]


@dataclasses.dataclass(frozen=True)
class _PeerSet:
    """What one resolved peer covers: addresses, and the pods behind them when known.

    `pods` None means an address-based peer (ipBlock, or all addresses).
    """

    addrs: tuple[ruleset.AddrRange, ...]
    pods: tuple[PeerPod, ...] | None


def is_peer_candidate(pod: model.Pod) -> bool:
    """Pods whose addresses can be policy peers: pod-network pods that hold an IP now.

    hostNetwork pods share the node's addresses, and finished pods have released their IPs
    (which may already belong to another pod), so neither may widen a rule.
    """
    return not pod.host_network and bool(pod.ips) and pod.phase not in FINISHED_PHASES


def namespace_labels(name: str, namespaces: Mapping[str, model.Namespace]) -> dict[str, str]:
    """A namespace's labels plus the `kubernetes.io/metadata.name` label the API always sets."""
    ns = namespaces.get(name)
    labels = dict(ns.labels) if ns is not None else {}
    labels[IMPLICIT_NAMESPACE_LABEL] = name
    return labels


def selects(policy: model.NetworkPolicy, pod: model.Pod) -> bool:
    """Whether the policy applies to the pod (same namespace, valid selector that matches)."""
    return (
        policy.namespace == pod.namespace
        and policy.pod_selector is not None
        and selectors.matches(policy.pod_selector, pod.labels)
    )


def policies_selecting(
    pod: model.Pod, policies: Iterable[model.NetworkPolicy]
) -> tuple[model.NetworkPolicy, ...]:
    """The policies that select `pod`, sorted by key (then resource version) for determinism."""
    chosen = [p for p in policies if selects(p, pod)]
    chosen.sort(key=lambda p: (p.key, p.resource_version))
    return tuple(chosen)


def build_index(
    namespaces: Mapping[str, model.Namespace], pods: Iterable[model.Pod]
) -> ClusterIndex:
    """Index the peer candidates of a snapshot by namespace; unparsable IPs are ignored."""
    peers: list[PeerPod] = []
    for pod in pods:
        if not is_peer_candidate(pod):
            continue
        addrs = []
        for ip in pod.ips:
            try:
                addrs.append(intervals.address_range(ip))
            except ValueError:
                continue
        if addrs:
            peers.append(PeerPod(pod, intervals.merge_addrs(addrs)))
    peers.sort(key=lambda p: (p.pod.key, p.pod.uid, p.addrs))
    grouped: dict[str, list[PeerPod]] = {}
    for peer in peers:
        grouped.setdefault(peer.pod.namespace, []).append(peer)
    return ClusterIndex(
        namespaces=dict(namespaces),
        peers=tuple(peers),
        by_namespace={ns: tuple(members) for ns, members in grouped.items()},
    )


def compile_pod(
    pod: model.Pod,
    policies: Iterable[model.NetworkPolicy],
    namespaces: Mapping[str, model.Namespace],
    pods: Iterable[model.Pod],
    node_addresses: Sequence[str] = (),
    service_index: policy_services.ServiceIndex | None = None,
) -> ruleset.PodRuleset:
    """The desired ruleset of `pod` given every policy, namespace and pod of the snapshot,
    and the addresses of the pod's own node (always allowed in, as upstream specifies).
    With `service_index`, egress also allows the Services whose allowed backends it reaches
    (`agent.policy.services`)."""
    return compile_indexed(
        pod, policies, build_index(namespaces, pods), node_addresses, service_index
    )


def compile_indexed(
    pod: model.Pod,
    policies: Iterable[model.NetworkPolicy],
    index: ClusterIndex,
    node_addresses: Sequence[str] = (),
    service_index: policy_services.ServiceIndex | None = None,
) -> ruleset.PodRuleset:
    """`compile_pod` over a prebuilt `ClusterIndex` (cheaper when compiling many pods)."""
    selecting = policies_selecting(pod, policies)
    egress = _direction(pod, [p for p in selecting if p.isolates_egress], _EGRESS, index)
    if service_index is not None:
        egress = policy_services.translate(egress, service_index, pod.node_name)
    return ruleset.PodRuleset(
        namespace=pod.namespace,
        pod=pod.name,
        ingress=_direction(
            pod,
            [p for p in selecting if p.isolates_ingress],
            _INGRESS,
            index,
            # Upstream semantics: an ingress-isolated pod still accepts its own node's traffic
            # (kubelet probes); only the listed node addresses, never other nodes'.
            always=_node_ranges(node_addresses),
        ),
        egress=egress,
        mode=policy_mode.resolve(pod, index.namespaces)[0],
    )


def _node_ranges(addresses: Sequence[str]) -> tuple[ruleset.AddrRange, ...]:
    ranges = []
    for address in addresses:
        try:
            ranges.append(intervals.address_range(address))
        except ValueError:
            continue
    return tuple(ranges)


def _direction(
    pod: model.Pod,
    isolating: Sequence[model.NetworkPolicy],
    direction: ruleset.Direction,
    index: ClusterIndex,
    always: Sequence[ruleset.AddrRange] = (),
) -> ruleset.DirectionRuleset:
    if not isolating:
        return ruleset.DirectionRuleset()
    any_port: list[ruleset.AddrRange] = list(always)
    triples: list[intervals.Triple] = []
    for policy in isolating:
        rules = policy.ingress if direction is _INGRESS else policy.egress
        for rule in rules:
            _compile_rule(pod, policy, rule, direction, index, any_port, triples)
    any_port_peers = intervals.merge_addrs(any_port)
    return ruleset.DirectionRuleset(
        isolated=True,
        any_port_peers=any_port_peers,
        port_peers=intervals.canonical_peer_ports(triples, exclude=any_port_peers),
        policies=tuple(sorted({p.key for p in isolating})),
    )


def _compile_rule(
    pod: model.Pod,
    policy: model.NetworkPolicy,
    rule: model.PolicyRule,
    direction: ruleset.Direction,
    index: ClusterIndex,
    any_port: list[ruleset.AddrRange],
    triples: list[intervals.Triple],
) -> None:
    """Add what one rule allows to `any_port` / `triples`."""
    if rule.peers:
        peer_sets = [s for s in (_resolve_peer(policy, p, index) for p in rule.peers) if s]
    else:
        peer_sets = [_PeerSet(intervals.ALL_ADDRESSES, None)]
    if not peer_sets:
        return
    if not rule.ports:
        for peer_set in peer_sets:
            any_port.extend(peer_set.addrs)
        return
    for policy_port in rule.ports:
        if policy_port.invalid or policy_port.protocol not in ruleset.PROTOCOL_NUMBERS:
            continue
        proto = ruleset.PROTOCOL_NUMBERS[policy_port.protocol]
        if isinstance(policy_port.port, str):
            if policy_port.end_port is not None:
                continue  # endPort needs a numeric port
            if direction is _INGRESS:
                for port in _named_ports(pod, policy_port.port, policy_port.protocol):
                    for peer_set in peer_sets:
                        triples.extend((a, proto, port) for a in peer_set.addrs)
            else:
                _egress_named(
                    policy_port.port, policy_port.protocol, proto, peer_sets, index, triples
                )
            continue
        ports = _numeric_ports(policy_port)
        if ports is None:
            continue
        for peer_set in peer_sets:
            triples.extend((a, proto, ports) for a in peer_set.addrs)


def _numeric_ports(policy_port: model.PolicyPort) -> ruleset.PortRange | None:
    """The port range of a numeric or absent port; None when invalid."""
    port, end = policy_port.port, policy_port.end_port
    if port is None:
        return intervals.ALL_PORTS if end is None else None
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= intervals.MAX_PORT:
        return None
    if end is None:
        return ruleset.PortRange(port, port)
    if not port <= end <= intervals.MAX_PORT:
        return None
    return ruleset.PortRange(port, end)


def _named_ports(pod: model.Pod, name: str, protocol: str) -> list[ruleset.PortRange]:
    """The ports a pod declares under `name` for `protocol` (usually zero or one)."""
    return [
        ruleset.PortRange(cp.port, cp.port)
        for cp in pod.container_ports
        if cp.name == name and cp.protocol == protocol and 1 <= cp.port <= intervals.MAX_PORT
    ]


def _egress_named(
    name: str,
    protocol: str,
    proto: int,
    peer_sets: Sequence[_PeerSet],
    index: ClusterIndex,
    triples: list[intervals.Triple],
) -> None:
    """Egress named port: resolve against each destination pod the peers cover."""
    for peer_set in peer_sets:
        if peer_set.pods is not None:
            for peer in peer_set.pods:
                for port in _named_ports(peer.pod, name, protocol):
                    triples.extend((a, proto, port) for a in peer.addrs)
            continue
        for peer in index.peers:
            ports = _named_ports(peer.pod, name, protocol)
            if not ports:
                continue
            inside = [
                a for a in peer.addrs if intervals.contains(peer_set.addrs, a.family, a.first)
            ]
            for port in ports:
                triples.extend((a, proto, port) for a in inside)


def _resolve_peer(
    policy: model.NetworkPolicy, peer: model.Peer, index: ClusterIndex
) -> _PeerSet | None:
    """What one `from`/`to` entry covers; None when it covers nothing or is invalid."""
    if peer.invalid:
        return None
    if peer.ip_block is not None:
        if peer.pod_selector is not None or peer.namespace_selector is not None:
            return None  # ipBlock must stand alone; never guess which part was meant
        try:
            addrs = intervals.cidr_minus(peer.ip_block.cidr, peer.ip_block.excepts)
        except ValueError:
            return None
        return _PeerSet(addrs, None) if addrs else None
    if peer.namespace_selector is None:
        if peer.pod_selector is None:
            return None  # an empty peer is rejected by the API; match nothing
        candidates = index.by_namespace.get(policy.namespace, ())
    else:
        ns_selector = peer.namespace_selector
        candidates = tuple(
            member
            for ns in sorted(index.by_namespace)
            if selectors.matches(ns_selector, namespace_labels(ns, index.namespaces))
            for member in index.by_namespace[ns]
        )
    if peer.pod_selector is not None:
        pod_selector = peer.pod_selector
        candidates = tuple(c for c in candidates if selectors.matches(pod_selector, c.pod.labels))
    if not candidates:
        return None
    return _PeerSet(intervals.merge_addrs(a for c in candidates for a in c.addrs), candidates)
