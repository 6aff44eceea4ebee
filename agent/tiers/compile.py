"""Compile the admin tiers for one direction of one local pod into ordered entries, one per
rule that matches anything. Pure.

The API's precedence (policies by priority, rules in order, first match wins) maps directly
onto the kernel: each rule becomes one entry, its region (peer address x protocol x
destination port) held in sets, and the entries are evaluated in order, one set lookup each,
so the first that holds a packet decides. The per-packet cost grows with the number of rules
of the tiers, never with the number of peers; and an edit of one rule changes only its own
entry's elements.

Regions are canonical `PeerPort` tuples (as `agent.calc.intervals.canonical_peer_ports`
makes them). Protocol `OTHER` (not an IANA number) stands for every protocol without ports
(ICMP, ...), with the full port range: a rule without protocols covers TCP, UDP, SCTP and
OTHER.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence

from agent import model
from agent.calc import intervals, ruleset
from agent.tiers import evaluate
from agent.tiers import model as tiers

OTHER = ruleset.OTHER_PROTOCOL
ALL_PORTS = ruleset.PortRange(0, 65535)
_PORT_PROTOCOLS = tuple(ruleset.PROTOCOL_NUMBERS.values())
_ALL_PROTOCOLS = (*_PORT_PROTOCOLS, OTHER)

Region = tuple[ruleset.PeerPort, ...]
Triple = tuple[ruleset.AddrRange, int, ruleset.PortRange]


@dataclasses.dataclass(frozen=True)
class Peer:
    """A possible other end: a pod (with its namespace's labels) or a node (its labels)."""

    addrs: tuple[ruleset.AddrRange, ...]
    pod: model.Pod | None = None
    namespace_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    node_labels: Mapping[str, str] | None = None


_ACTIONS = {
    tiers.ACCEPT: ruleset.TierAction.ACCEPT,
    tiers.DENY: ruleset.TierAction.DENY,
    tiers.PASS: ruleset.TierAction.PASS,
}


def networks_of(peer: tiers.Peer) -> tuple[ruleset.AddrRange, ...]:
    """The merged address ranges of a `networks` peer."""
    return _networks(peer.networks)


@functools.lru_cache(maxsize=1024)
def _networks(cidrs: tuple[str, ...]) -> tuple[ruleset.AddrRange, ...]:
    return intervals.merge_addrs(intervals.cidr_range(cidr) for cidr in cidrs)


def matches(peer: tiers.Peer, candidate: Peer, direction: str) -> bool:
    """Whether one rule peer covers `candidate` (a pod or node whose addresses come along in
    the rule's region). For a `networks` peer: the known pods with an address inside the
    networks (so that a named port resolves on them, as for a NetworkPolicy ipBlock)."""
    if peer.networks:
        if direction != evaluate.EGRESS or candidate.pod is None or candidate.pod.host_network:
            return False
        nets = networks_of(peer)
        return any(intervals.contains(nets, a.family, a.first) for a in candidate.addrs)
    remote = evaluate.Remote("", candidate.pod, candidate.namespace_labels, candidate.node_labels)
    return evaluate.peer_matches(peer, remote, direction)


Members = Callable[[tiers.Peer], Iterable[Peer]]


def _peer_addrs(
    peer: tiers.Peer, members: Iterable[Peer], direction: str
) -> list[tuple[ruleset.AddrRange, Peer | None]]:
    """The addresses one rule peer covers, each with the pod or node behind it (None for a
    network); `members` are the candidates it matches (`matches`)."""
    if peer.networks:
        if direction != evaluate.EGRESS:
            return []
        nets = networks_of(peer)
        out: list[tuple[ruleset.AddrRange, Peer | None]] = [(net, None) for net in nets]
        for candidate in members:
            out.extend(
                (addr, candidate)
                for addr in candidate.addrs
                if intervals.contains(nets, addr.family, addr.first)
            )
        return out
    return [(addr, candidate) for candidate in members for addr in candidate.addrs]


def _port_triples(
    ports: tuple[tiers.Port, ...], addr: ruleset.AddrRange, destination: model.Pod | None
) -> list[Triple]:
    if not ports:
        return [(addr, proto, ALL_PORTS) for proto in _ALL_PROTOCOLS]
    out: list[Triple] = []
    for entry in ports:
        if entry.invalid:
            continue
        if entry.named is not None:
            if destination is None:
                continue
            for cp in destination.container_ports:
                if cp.name == entry.named and cp.protocol in ruleset.PROTOCOL_NUMBERS:
                    number = ruleset.PROTOCOL_NUMBERS[cp.protocol]
                    out.append((addr, number, ruleset.PortRange(cp.port, cp.port)))
            continue
        number = ruleset.PROTOCOL_NUMBERS[entry.protocol]
        if entry.start is None:
            out.append((addr, number, ALL_PORTS))
        else:
            out.append((addr, number, ruleset.PortRange(entry.start, entry.end or entry.start)))
    return out


@dataclasses.dataclass(frozen=True)
class RuleRegion:
    """One rule's action and region for a local pod; `addrs` and `ports` the same region
    factored when it is a product (`ruleset.TierEntry`), else `addrs` None."""

    action: str
    region: Region
    addrs: tuple[ruleset.AddrRange, ...] | None = None
    ports: tuple[ruleset.ProtoPorts, ...] = ()


def rule_region(
    rule: tiers.Rule, pod: model.Pod, peers: Sequence[Peer], direction: str
) -> RuleRegion:
    """The action and the whole region of one rule for the local `pod` (before precedence),
    every rule peer matched against all of `peers`."""
    return rule_region_of(
        rule, pod, direction, lambda peer: [c for c in peers if matches(peer, c, direction)]
    )


_EVERY = (ruleset.AddrRange(4, 0, (1 << 32) - 1), ruleset.AddrRange(6, 0, (1 << 128) - 1))


def rule_region_of(
    rule: tiers.Rule, pod: model.Pod, direction: str, members: Members
) -> RuleRegion:
    """`rule_region` with each rule peer's matching candidates given by `members` (a cache of
    them, `agent.tiers.resolve`). `pod` matters only to an ingress rule with named ports (they
    resolve on the local pod). A Deny or Pass rule with a peer of an unknown kind denies
    everything (fail closed)."""
    if not rule.action:
        return RuleRegion("", ())
    if rule.action != tiers.ACCEPT and any(p.unknown for p in rule.peers):
        every = [(addr, proto, ALL_PORTS) for addr in _EVERY for proto in _ALL_PROTOCOLS]
        ports = tuple(ruleset.ProtoPorts(proto, ALL_PORTS) for proto in _ALL_PROTOCOLS)
        return RuleRegion(tiers.DENY, intervals.canonical_peer_ports(every), _EVERY, ports)
    triples: list[Triple] = []
    addrs: list[ruleset.AddrRange] = []
    for peer in rule.peers:
        for addr, behind in _peer_addrs(peer, members(peer), direction):
            addrs.append(addr)
            if direction == evaluate.INGRESS:
                destination: model.Pod | None = pod
            else:
                destination = behind.pod if behind is not None else None
            triples.extend(_port_triples(rule.ports, addr, destination))
    region = intervals.canonical_peer_ports(triples)
    factors = proto_ports(rule.ports)
    if factors is None or not region:
        return RuleRegion(rule.action, region)
    return RuleRegion(rule.action, region, intervals.merge_addrs(addrs), factors)


def proto_ports(ports: tuple[tiers.Port, ...]) -> tuple[ruleset.ProtoPorts, ...] | None:
    """A rule's ports as canonical (protocol, port range) pairs (sorted, each protocol's
    ranges merged), the same for every peer; None when a named port makes them depend on
    the destination pod."""
    if any(p.named is not None and not p.invalid for p in ports):
        return None
    if not ports:
        return tuple(ruleset.ProtoPorts(proto, ALL_PORTS) for proto in sorted(_ALL_PROTOCOLS))
    ranges: dict[int, list[tuple[int, int]]] = {}
    for entry in ports:
        if entry.invalid:
            continue
        number = ruleset.PROTOCOL_NUMBERS[entry.protocol]
        if entry.start is None:
            ranges.setdefault(number, []).append((0, 65535))
        else:
            ranges.setdefault(number, []).append((entry.start, entry.end or entry.start))
    out: list[ruleset.ProtoPorts] = []
    for number in sorted(ranges):
        merged: list[list[int]] = []
        for first, last in sorted(ranges[number]):
            if merged and first <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], last)
            else:
                merged.append([first, last])
        out.extend(ruleset.ProtoPorts(number, ruleset.PortRange(a, b)) for a, b in merged)
    return tuple(out)


Regions = Callable[[tiers.Rule, model.Pod, str], RuleRegion]


def tier_entries(
    policies: Iterable[tiers.ClusterPolicy],
    tier: str,
    direction: str,
    pod: model.Pod,
    namespace_labels: Mapping[str, str],
    peers: Sequence[Peer],
    regions: Regions | None = None,
) -> tuple[ruleset.TierEntry, ...]:
    """The entries of `tier` for the local `pod` in `direction`, in precedence order (policy
    order, then rule order; rules that match nothing left out): the first entry holding a
    packet decides. `regions` (rule, pod, direction -> action and region) replaces matching
    every rule peer against `peers` (a cache: `agent.tiers.resolve`)."""
    region_of: Regions = regions or (lambda rule, pod, d: rule_region(rule, pod, peers, d))
    entries: list[ruleset.TierEntry] = []
    for policy in sorted((p for p in policies if p.tier == tier), key=lambda p: p.order):
        if not evaluate.selects(policy.subject, pod, namespace_labels):
            continue
        for rule in policy.ingress if direction == evaluate.INGRESS else policy.egress:
            found = region_of(rule, pod, direction)
            if found.region:
                action = _ACTIONS[found.action]
                entries.append(
                    ruleset.TierEntry(
                        policy.key, rule.name, action, found.region, found.addrs, found.ports
                    )
                )
    return tuple(entries)


def lookup(
    entries: Sequence[ruleset.TierEntry], family: int, address: int, protocol: int, port: int
) -> ruleset.TierEntry | None:
    """The first entry whose region holds the packet (what the kernel's rules, one set lookup
    each in entry order, find)."""
    for entry in entries:
        for element in entry.elements:
            if (
                element.protocol == protocol
                and element.addrs.family == family
                and element.addrs.first <= address <= element.addrs.last
                and element.ports.first <= port <= element.ports.last
            ):
                return entry
    return None
