"""A local pod's policies taken apart into terms: "the members of this selector, times these
ports" or "these fixed addresses, times these ports". Pure.

Why: the incremental calculator (`agent.calc.incremental`) must turn "pod X joined selector S"
into the set elements X adds to each local pod that refers to S, without resolving the pod's
policies again. A term is that reference, with everything about the local pod already
resolved (its selecting policies, ingress named ports against its own container ports); what
is left depends only on the member pod. The semantics are those of `agent.calc.compile`
(invalid parts match nothing, an ipBlock must stand alone, egress named ports resolve on each
destination pod), which stays the reference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

from agent import model
from agent.calc import compile as calc_compile
from agent.calc import elements, intervals, ruleset

_INGRESS = ruleset.Direction.INGRESS


@dataclasses.dataclass(frozen=True)
class Source:
    """A set of peer pods: `pods` (a podSelector in the policy's namespace), `namespaces` (a
    namespaceSelector, with or without a podSelector) or `all` (every peer pod)."""

    kind: str
    namespace: str = ""
    namespace_selector: model.LabelSelector | None = None
    pod_selector: model.LabelSelector | None = None


ALL = Source("all")


@dataclasses.dataclass(frozen=True)
class Named:
    """An egress named port, resolved on each member pod."""

    name: str
    protocol: str
    number: int


Item = elements.PortItem | Named


@dataclasses.dataclass(frozen=True)
class Term:
    """Pieces of one direction: each address of `addrs` (source None) or of each member of
    `source` (only those inside `block`, when set) times each item. `policy` is the key of the
    policy the term comes from ("" for the agent's own Node addresses, which no policy owns):
    each policy's own peers feed its hit counter (`ruleset.PolicyPeers`)."""

    direction: ruleset.Direction
    source: Source | None
    items: tuple[Item, ...]
    addrs: tuple[ruleset.AddrRange, ...] = ()
    block: tuple[ruleset.AddrRange, ...] | None = None
    policy: str = ""


@dataclasses.dataclass(frozen=True)
class Binding:
    """Everything the local pod's ruleset is made of, per direction: whether isolated, the
    isolating policies' keys, and the terms."""

    isolated: dict[ruleset.Direction, bool]
    policies: dict[ruleset.Direction, tuple[str, ...]]
    terms: tuple[Term, ...]


def bind(
    pod: model.Pod, selecting: Sequence[model.NetworkPolicy], node_addresses: Sequence[str]
) -> Binding:
    """The terms of `pod`, given the policies that select it (`compile.policies_selecting`)."""
    terms: list[Term] = []
    isolated: dict[ruleset.Direction, bool] = {}
    names: dict[ruleset.Direction, tuple[str, ...]] = {}
    for direction in ruleset.Direction:
        isolating = [
            p
            for p in selecting
            if (p.isolates_ingress if direction is _INGRESS else p.isolates_egress)
        ]
        isolated[direction] = bool(isolating)
        names[direction] = tuple(sorted({p.key for p in isolating}))
        if not isolating:
            continue
        if direction is _INGRESS:
            always = calc_compile.node_ranges(node_addresses)
            if always:
                terms.append(Term(direction, None, (None,), addrs=always))
        for policy in isolating:
            for rule in policy.ingress if direction is _INGRESS else policy.egress:
                terms.extend(_rule_terms(pod, policy, rule, direction))
    return Binding(isolated, names, tuple(terms))


def _rule_terms(
    pod: model.Pod,
    policy: model.NetworkPolicy,
    rule: model.PolicyRule,
    direction: ruleset.Direction,
) -> Iterator[Term]:
    items = tuple(_items(pod, rule, direction))
    if not items:
        return
    fixed = tuple(i for i in items if not isinstance(i, Named))
    named = tuple(i for i in items if isinstance(i, Named))
    resolved: list[Source | tuple[ruleset.AddrRange, ...]] = []
    if rule.peers:
        for peer in rule.peers:
            found = _peer(policy, peer)
            if found is not None:
                resolved.append(found)
    else:
        resolved.append(intervals.ALL_ADDRESSES)
    key = policy.key
    for each in resolved:
        if isinstance(each, Source):
            yield Term(direction, each, items, policy=key)
            continue
        if fixed:
            yield Term(direction, None, fixed, addrs=each, policy=key)
        if named:
            yield Term(direction, ALL, named, block=each, policy=key)


def _items(pod: model.Pod, rule: model.PolicyRule, direction: ruleset.Direction) -> list[Item]:
    """What each peer address of the rule is allowed on: [None] (any port) for a rule without
    ports; else one item per valid port (ingress named ports resolved on `pod`)."""
    if not rule.ports:
        return [None]
    items: list[Item] = []
    for policy_port in rule.ports:
        if policy_port.invalid or policy_port.protocol not in ruleset.PROTOCOL_NUMBERS:
            continue
        proto = ruleset.PROTOCOL_NUMBERS[policy_port.protocol]
        if isinstance(policy_port.port, str):
            if policy_port.end_port is not None:
                continue  # endPort needs a numeric port
            if direction is _INGRESS:
                for port in calc_compile.named_ports(pod, policy_port.port, policy_port.protocol):
                    items.append((proto, port.first, port.last))
            else:
                items.append(Named(policy_port.port, policy_port.protocol, proto))
            continue
        ports = calc_compile.numeric_ports(policy_port)
        if ports is not None:
            items.append((proto, ports.first, ports.last))
    return items


def _peer(
    policy: model.NetworkPolicy, peer: model.Peer
) -> Source | tuple[ruleset.AddrRange, ...] | None:
    """A `from`/`to` entry as a Source, as fixed addresses, or None (matches nothing)."""
    if peer.invalid:
        return None
    if peer.ip_block is not None:
        if peer.pod_selector is not None or peer.namespace_selector is not None:
            return None
        try:
            addrs = intervals.cidr_minus(peer.ip_block.cidr, peer.ip_block.excepts)
        except ValueError:
            return None
        return addrs or None
    if peer.namespace_selector is None:
        if peer.pod_selector is None:
            return None
        return Source("pods", namespace=policy.namespace, pod_selector=peer.pod_selector)
    return Source(
        "namespaces", namespace_selector=peer.namespace_selector, pod_selector=peer.pod_selector
    )


def pieces(
    term: Term, member: calc_compile.PeerPod | None
) -> Iterator[tuple[ruleset.AddrRange, elements.PortItem]]:
    """The pieces `term` gives for one member pod (None: a term of fixed addresses)."""
    if member is None:
        for item in term.items:
            if not isinstance(item, Named):
                for addrs in term.addrs:
                    yield addrs, item
        return
    own = member.addrs
    if term.block is not None:
        block = term.block
        own = tuple(a for a in own if intervals.contains(block, a.family, a.first))
    for item in term.items:
        if isinstance(item, Named):
            for port in calc_compile.named_ports(member.pod, item.name, item.protocol):
                for addrs in own:
                    yield addrs, (item.number, port.first, port.last)
        else:
            for addrs in own:
                yield addrs, item


def split(term: Term) -> tuple[tuple[elements.PortItem, ...], Term | None]:
    """A source term's fixed items (the same for every member: usable with the members'
    merged addresses, when the term has no block) and the term of its named ports alone."""
    named = tuple(i for i in term.items if isinstance(i, Named))
    plain = tuple(i for i in term.items if not isinstance(i, Named))
    if term.block is not None:
        return (), term  # only some addresses of each member count
    return plain, (dataclasses.replace(term, items=named) if named else None)
