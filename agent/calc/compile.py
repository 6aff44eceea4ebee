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
import itertools
from collections.abc import Iterable, Mapping, Sequence, Set
from typing import Any

from agent import model, selectors
from agent.calc import intervals, ruleset
from agent.calc import mode as calc_mode
from agent.calc import services as calc_services

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
    # Derived lookups computed on first use (per-namespace label buckets, resolved peers);
    # a cache, so it takes no part in equality. See `update_index` and `_resolve_peer`.
    cache: dict[Any, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)


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


def peer_pod(pod: model.Pod) -> PeerPod | None:
    """The pod as a peer (its parsed addresses), or None when it cannot be one."""
    if not is_peer_candidate(pod):
        return None
    addrs = []
    for ip in pod.ips:
        try:
            addrs.append(intervals.address_range(ip))
        except ValueError:
            continue
    return PeerPod(pod, intervals.merge_addrs(addrs)) if addrs else None


def update_index(
    previous: ClusterIndex,
    namespaces: Mapping[str, model.Namespace],
    pods: Mapping[str, model.Pod],
    changed: Iterable[str],
) -> ClusterIndex:
    """`build_index(namespaces, pods.values())` computed from `previous` (built from an earlier
    snapshot) and the keys of the pods that changed since: only their namespaces are redone,
    and what `previous` memoised that the change cannot have touched (label buckets, resolved
    peers, namespaceSelector matches; see `_carried_cache`) is carried over. Equal to a full
    build (randomised tests check it); O(changed pods + namespaces) instead of O(all pods)."""
    by_namespace = dict(previous.by_namespace)
    touched: dict[str, dict[str, PeerPod]] = {}
    for key in changed:
        namespace = key.split("/", 1)[0]
        if namespace not in touched:
            touched[namespace] = {p.pod.key: p for p in by_namespace.get(namespace, ())}
        touched[namespace].pop(key, None)
        pod = pods.get(key)
        peer = peer_pod(pod) if pod is not None else None
        if peer is not None:
            touched[namespace][key] = peer
    for namespace, members in touched.items():
        ordered = sorted(members.values(), key=lambda p: (p.pod.key, p.pod.uid, p.addrs))
        if ordered:
            by_namespace[namespace] = tuple(ordered)
        else:
            by_namespace.pop(namespace, None)
    namespaces = dict(namespaces)
    return ClusterIndex(
        namespaces=namespaces,
        peers=previous.peers
        if not touched
        else tuple(itertools.chain.from_iterable(by_namespace[ns] for ns in sorted(by_namespace))),
        by_namespace=by_namespace,
        cache=_carried_cache(previous, namespaces, by_namespace.keys(), touched),
    )


# Memos of the peer index (see `_carried_cache`): the index's update count, and how many
# updates a resolved peer or namespaceSelector match survives without being used.
_GENERATION = "generation"
_UNUSED_UPDATES = 100


def _carried_cache(
    previous: ClusterIndex,
    namespaces: Mapping[str, model.Namespace],
    holders: Set[str],
    touched: Iterable[str],
) -> dict[Any, Any]:
    """The entries of `previous.cache` still true after the pods of the `touched` namespaces
    changed: label buckets of the untouched namespaces, and resolved peers that cannot see a
    touched namespace. A peer's resolution reads the policy's own namespace (podSelector
    alone) or every namespace its namespaceSelector matches, so it is kept when none of those
    was touched -- and only while no namespace changed (labels, or one created or deleted).
    ipBlock and invalid peers read no pod at all. The namespaces a selector matches are kept
    while no namespace changed and the same namespaces (`holders`) hold peer pods.

    Both kinds of memo are keyed by values that policy edits leave behind, so one not used
    for `_UNUSED_UPDATES` updates is dropped: the cache holds what recent passes used, not
    every peer the agent has ever seen."""
    generation = previous.cache.get(_GENERATION, 0)
    oldest = generation - _UNUSED_UPDATES
    touched = set(touched)
    same_namespaces = previous.namespaces == namespaces
    same_holders = same_namespaces and previous.by_namespace.keys() == holders
    touched_labels = {ns: namespace_labels(ns, namespaces) for ns in touched}
    cache: dict[Any, Any] = {_GENERATION: generation + 1}
    for key, value in previous.cache.items():
        if not isinstance(key, tuple):
            continue
        if key[0] == "labels":
            if key[1] not in touched:
                cache[key] = value
            continue
        if key[0] not in ("namespaces", "peer") or value[1] < oldest:
            continue
        if key[0] == "namespaces":  # which namespaces (with peers) a selector matches
            if same_holders:
                cache[key] = value
            continue
        if not same_namespaces:
            continue
        _, policy_namespace, peer = key
        if peer.invalid or peer.ip_block is not None:
            cache[key] = value
        elif peer.namespace_selector is None:
            if policy_namespace not in touched:
                cache[key] = value
        elif not any(
            selectors.matches(peer.namespace_selector, labels) for labels in touched_labels.values()
        ):
            cache[key] = value
    return cache


def _namespace_members(
    index: ClusterIndex, namespace: str, selector: model.LabelSelector | None
) -> tuple[PeerPod, ...]:
    """The namespace's peer pods matching `selector` (None: all), through label buckets: a
    selector with matchLabels only looks at the pods carrying its first pair."""
    members = index.by_namespace.get(namespace, ())
    if selector is None:
        return members
    if selector.match_labels and members:
        buckets = index.cache.get(("labels", namespace))
        if buckets is None:
            grouped: dict[tuple[str, str], list[PeerPod]] = {}
            for member in members:
                for pair in member.pod.labels.items():
                    grouped.setdefault(pair, []).append(member)
            buckets = {pair: tuple(group) for pair, group in grouped.items()}
            index.cache[("labels", namespace)] = buckets
        members = buckets.get(selector.match_labels[0], ())
    return tuple(m for m in members if selectors.matches(selector, m.pod.labels))


def build_index(
    namespaces: Mapping[str, model.Namespace], pods: Iterable[model.Pod]
) -> ClusterIndex:
    """Index the peer candidates of a snapshot by namespace; unparsable IPs are ignored."""
    peers: list[PeerPod] = []
    for pod in pods:
        peer = peer_pod(pod)
        if peer is not None:
            peers.append(peer)
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
    service_index: calc_services.ServiceIndex | None = None,
) -> ruleset.PodRuleset:
    """The desired ruleset of `pod` given every policy, namespace and pod of the snapshot,
    and the addresses of the pod's own node (always allowed in, as upstream specifies).
    With `service_index`, egress also allows the Services whose allowed backends it reaches
    (`agent.calc.services`)."""
    return compile_indexed(
        pod, policies, build_index(namespaces, pods), node_addresses, service_index
    )


def compile_indexed(
    pod: model.Pod,
    policies: Iterable[model.NetworkPolicy],
    index: ClusterIndex,
    node_addresses: Sequence[str] = (),
    service_index: calc_services.ServiceIndex | None = None,
    mode: ruleset.PolicyMode | None = None,
) -> ruleset.PodRuleset:
    """`compile_pod` over a prebuilt `ClusterIndex` (cheaper when compiling many pods).
    `mode`: the pod's policy mode when the caller resolved it (`calc.mode`), else the
    default resolution."""
    selecting = policies_selecting(pod, policies)
    egress = _direction(pod, [p for p in selecting if p.isolates_egress], _EGRESS, index)
    if service_index is not None:
        egress = calc_services.translate(egress, service_index, pod.node_name)
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
            always=node_ranges(node_addresses),
        ),
        egress=egress,
        mode=calc_mode.resolve(pod, index.namespaces).mode if mode is None else mode,
    )


def node_ranges(addresses: Sequence[str]) -> tuple[ruleset.AddrRange, ...]:
    """A node's parsable addresses as one-address ranges (admitted on ingress)."""
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
    own: dict[str, tuple[list[ruleset.AddrRange], list[intervals.Triple]]] = {}
    for policy in isolating:
        rules = policy.ingress if direction is _INGRESS else policy.egress
        policy_any, policy_triples = own.setdefault(policy.key, ([], []))
        for rule in rules:
            _compile_rule(pod, policy, rule, direction, index, policy_any, policy_triples)
        any_port.extend(policy_any)
        triples.extend(policy_triples)
    any_port_peers = intervals.merge_addrs(any_port)
    return ruleset.DirectionRuleset(
        isolated=True,
        any_port_peers=any_port_peers,
        port_peers=intervals.canonical_peer_ports(triples, exclude=any_port_peers),
        policies=tuple(sorted(own)),
        per_policy=tuple(_policy_peers(key, *own[key]) for key in sorted(own)),
    )


def _policy_peers(
    key: str, any_port: list[ruleset.AddrRange], triples: list[intervals.Triple]
) -> ruleset.PolicyPeers:
    """What one policy allows on its own, canonical (its hit counter matches on it)."""
    merged = intervals.merge_addrs(any_port)
    return ruleset.PolicyPeers(key, merged, intervals.canonical_peer_ports(triples, exclude=merged))


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
                for port in named_ports(pod, policy_port.port, policy_port.protocol):
                    for peer_set in peer_sets:
                        triples.extend((a, proto, port) for a in peer_set.addrs)
            else:
                _egress_named(
                    policy_port.port, policy_port.protocol, proto, peer_sets, index, triples
                )
            continue
        ports = numeric_ports(policy_port)
        if ports is None:
            continue
        for peer_set in peer_sets:
            triples.extend((a, proto, ports) for a in peer_set.addrs)


def numeric_ports(policy_port: model.PolicyPort) -> ruleset.PortRange | None:
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


def named_ports(pod: model.Pod, name: str, protocol: str) -> list[ruleset.PortRange]:
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
                for port in named_ports(peer.pod, name, protocol):
                    triples.extend((a, proto, port) for a in peer.addrs)
            continue
        for peer in index.peers:
            ports = named_ports(peer.pod, name, protocol)
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
    """What one `from`/`to` entry covers; None when it covers nothing or is invalid.

    It depends only on the policy's namespace, the entry and the snapshot, so it is resolved
    once per index (many local pods share policies)."""
    memo_key = ("peer", policy.namespace, peer)
    memo: list[Any] | None = index.cache.get(memo_key)  # [resolved, generation last used]
    if memo is None:
        memo = index.cache[memo_key] = [_resolve_peer_uncached(policy, peer, index), 0]
    memo[1] = index.cache.get(_GENERATION, 0)
    found: _PeerSet | None = memo[0]
    return found


def _matching_namespaces(index: ClusterIndex, selector: model.LabelSelector) -> tuple[str, ...]:
    """The namespaces holding peer pods whose labels `selector` matches, sorted; memoised per
    selector value, as many policies share a namespaceSelector (and carried over by
    `update_index` while no namespace changes)."""
    memo_key = ("namespaces", selector)
    memo: list[Any] | None = index.cache.get(memo_key)  # [names, generation last used]
    if memo is None:
        names = tuple(
            ns
            for ns in sorted(index.by_namespace)
            if selectors.matches(selector, namespace_labels(ns, index.namespaces))
        )
        memo = index.cache[memo_key] = [names, 0]
    memo[1] = index.cache.get(_GENERATION, 0)
    found: tuple[str, ...] = memo[0]
    return found


def _resolve_peer_uncached(
    policy: model.NetworkPolicy, peer: model.Peer, index: ClusterIndex
) -> _PeerSet | None:
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
        candidates = _namespace_members(index, policy.namespace, peer.pod_selector)
    else:
        candidates = tuple(
            member
            for ns in _matching_namespaces(index, peer.namespace_selector)
            for member in _namespace_members(index, ns, peer.pod_selector)
        )
    if not candidates:
        return None
    return _PeerSet(intervals.merge_addrs(a for c in candidates for a in c.addrs), candidates)
