"""Why a connection is allowed or blocked: the verdict of each side (the source's egress, the
destination's ingress) and the chain of reasons behind it. Pure.

Why: when a connection fails, an operator asks "which policy did this?". The verdict comes from
the very calculation the agent programs (`calc.desired`, judged by `calc.verdict.allows`), so
`podseg explain` says what the kernel does. The reasons are worked out rule by rule, from the
NetworkPolicy semantics restated independently (quarantine, node guard, which policies isolate
the pod, which rule/peer/port allows it, the mode); the two are compared, and a disagreement
is reported instead of hidden (tests assert it never happens).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping, Sequence

from agent import model, selectors
from agent.calc import compile as calc_compile
from agent.calc import containment, intervals, ruleset, verdict
from agent.calc import desired as calc_desired
from agent.tiers import evaluate as tiers_evaluate
from agent.tiers import model as tiers_model

ALLOWED, DENIED, WOULD_DROP = "allowed", "denied", "would-drop"


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One end of a connection: a pod of the snapshot, or an address outside it."""

    address: str
    pod: model.Pod | None = None

    @property
    def name(self) -> str:
        return self.pod.key if self.pod is not None else self.address


@dataclasses.dataclass(frozen=True)
class Match:
    """A rule that allows the connection: policy, rule index, peer index, port."""

    policy: str
    rule: int
    peer: str
    port: str

    def text(self) -> str:
        return f"{self.policy} rule {self.rule}: peer {self.peer}, port {self.port}"


@dataclasses.dataclass(frozen=True)
class Side:
    """One side's judgement: `direction` of `pod` against `peer`."""

    direction: str
    pod: str
    verdict: str  # allowed | denied | would-drop
    reasons: tuple[str, ...]
    isolating: tuple[str, ...] = ()  # policies that isolate the pod in this direction
    allowed_by: tuple[Match, ...] = ()
    agrees: bool = True  # the rule-by-rule reasons agree with the compiled ruleset


@dataclasses.dataclass(frozen=True)
class Explanation:
    source: str
    destination: str
    protocol: str
    port: int | None
    sides: tuple[Side, ...]
    source_address: str = ""
    destination_address: str = ""

    @property
    def verdict(self) -> str:
        """The connection's fate: denied if either side denies, would-drop if either side
        only lets it through in visibility mode, else allowed."""
        verdicts = {side.verdict for side in self.sides}
        for outcome in (DENIED, WOULD_DROP):
            if outcome in verdicts:
                return outcome
        return ALLOWED


def explain(
    source: Endpoint,
    destination: Endpoint,
    protocol: str,
    port: int | None,
    cluster: calc_desired.Cluster,
) -> Explanation:
    """Both sides of a connection from `source` to `destination` on `protocol`/`port`. An
    address a pod holds is that pod (the kernel judges by address)."""
    source, destination = _owned(source, cluster), _owned(destination, cluster)
    proto = ruleset.PROTOCOL_NUMBERS[protocol.upper()]
    if source.pod is not None and source.pod == destination.pod:
        loopback = Side(
            "loopback", source.pod.key, ALLOWED, ("a pod's traffic to itself is never filtered",)
        )
        return Explanation(
            source.name,
            destination.name,
            protocol.upper(),
            port,
            (loopback,),
            source.address,
            destination.address,
        )
    sides = []
    if source.pod is not None:
        sides.append(_side(ruleset.Direction.EGRESS, source.pod, destination, proto, port, cluster))
    if destination.pod is not None:
        sides.append(
            _side(ruleset.Direction.INGRESS, destination.pod, source, proto, port, cluster)
        )
    return Explanation(
        source.name,
        destination.name,
        protocol.upper(),
        port,
        tuple(sides),
        source.address,
        destination.address,
    )


def _owned(endpoint: Endpoint, cluster: calc_desired.Cluster) -> Endpoint:
    if endpoint.pod is not None:
        return endpoint
    address = ipaddress.ip_address(endpoint.address)
    for peer in cluster.peers.peers:
        if any(
            r.first <= int(address) <= r.last and r.family == address.version for r in peer.addrs
        ):
            return Endpoint(endpoint.address, peer.pod)
    return endpoint


def _side(
    direction: ruleset.Direction,
    pod: model.Pod,
    peer: Endpoint,
    proto: int,
    port: int | None,
    cluster: calc_desired.Cluster,
) -> Side:
    wanted = calc_desired.desired(pod, cluster).ruleset
    kernel = verdict.allows(wanted, direction, peer.address, proto, port)
    reasons, isolating, matches, allowed = _reasons(direction, pod, peer, proto, port, cluster)
    if wanted.mode is ruleset.PolicyMode.VISIBILITY and not kernel and isolating:
        reasons = (*reasons, "visibility mode: the drop is logged and counted, not enforced")
        outcome = WOULD_DROP
    else:
        outcome = ALLOWED if kernel else DENIED
    return Side(
        direction.value, pod.key, outcome, reasons, isolating, matches, agrees=allowed == kernel
    )


def _reasons(
    direction: ruleset.Direction,
    pod: model.Pod,
    peer: Endpoint,
    proto: int,
    port: int | None,
    cluster: calc_desired.Cluster,
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[Match, ...], bool]:
    """(reasons, isolating policies, allowing rules, allowed) worked out rule by rule."""
    if containment.is_quarantined(pod):
        return _quarantine(direction, pod, peer, cluster)
    if direction is ruleset.Direction.EGRESS:
        guarded = _node_guard(pod, peer.address, proto, port, cluster)
        if guarded is not None:
            return (guarded,), (), (), False
    admin = _tier(tiers_model.ADMIN, direction, pod, peer, proto, port, cluster)
    if admin is not None and admin.action != tiers_model.PASS:
        return (_tier_text(admin),), (admin.policy,), (), admin.action == tiers_model.ACCEPT
    passed = (_tier_text(admin),) if admin is not None else ()
    isolating = tuple(
        sorted(
            p.key
            for p in calc_compile.policies_selecting(pod, cluster.policies.candidates(pod))
            if (p.isolates_ingress if direction is ruleset.Direction.INGRESS else p.isolates_egress)
        )
    )
    if not isolating:
        baseline = _tier(tiers_model.BASELINE, direction, pod, peer, proto, port, cluster)
        if baseline is not None and baseline.action != tiers_model.PASS:
            allowed = baseline.action == tiers_model.ACCEPT
            return (*passed, _tier_text(baseline)), (baseline.policy,), (), allowed
        return (*passed, f"no policy isolates {pod.key} for {direction.value}"), (), (), True
    if direction is ruleset.Direction.INGRESS and _from_own_node(pod, peer.address, cluster):
        reason = "traffic from the pod's own node is always allowed in (kubelet probes)"
        return (reason,), isolating, (), True
    matches = _matches(direction, pod, peer, proto, port, cluster, isolating)
    if matches:
        return tuple(m.text() for m in matches), isolating, matches, True
    reason = f"isolated by {', '.join(isolating)}; no rule allows {peer.name}"
    return (reason,), isolating, (), False


def _tier(
    tier: str,
    direction: ruleset.Direction,
    pod: model.Pod,
    peer: Endpoint,
    proto: int,
    port: int | None,
    cluster: calc_desired.Cluster,
) -> tiers_evaluate.Match | None:
    """The first rule of an admin tier that matches, by the reference evaluation
    (`agent.tiers.evaluate`), independent of the compiled sets the kernel holds."""
    if not cluster.admin:
        return None
    node_labels = next(
        (n.labels for n in cluster.nodes.values() if _same_address(peer.address, n.addresses)),
        None,
    )
    remote = tiers_evaluate.Remote(
        peer.address,
        peer.pod,
        calc_compile.namespace_labels(peer.pod.namespace, cluster.namespaces) if peer.pod else {},
        node_labels,
    )
    protocol = next(name for name, number in ruleset.PROTOCOL_NUMBERS.items() if number == proto)
    return tiers_evaluate.first_match(
        cluster.admin,
        tier,
        direction.value,
        pod,
        calc_compile.namespace_labels(pod.namespace, cluster.namespaces),
        remote,
        protocol,
        port or 0,
    )


def _tier_text(match: tiers_evaluate.Match) -> str:
    verdicts = {
        tiers_model.ACCEPT: "allows",
        tiers_model.DENY: "denies",
        tiers_model.PASS: "passes",
    }
    then = " on to NetworkPolicy" if match.action == tiers_model.PASS else ""
    return f"{match.tier} tier: {match.policy} rule {match.rule} {verdicts[match.action]}{then}"


def _quarantine(
    direction: ruleset.Direction, pod: model.Pod, peer: Endpoint, cluster: calc_desired.Cluster
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[Match, ...], bool]:
    sources, _errors = containment.allow_from(pod.annotations, cluster.allow_from_widest)
    if direction is ruleset.Direction.INGRESS and _within(peer.address, sources):
        return (f"{pod.key} is quarantined; {peer.address} is a forensic source",), (), (), True
    return (f"{pod.key} is quarantined: every new connection is dropped",), (), (), False


def _node_guard(
    pod: model.Pod, address: str, proto: int, port: int | None, cluster: calc_desired.Cluster
) -> str | None:
    """Why the node guard blocks `address`, or None."""
    if cluster.guard_ports is None:
        return None
    guard = containment.node_guard(
        cluster.namespaces.get(pod.namespace), cluster.nodes.values(), cluster.guard_ports
    )
    if guard is None:
        return None
    if _within(address, guard.blocked):
        return f"node guard: {address} is a cloud metadata address"
    guarded_port = port is not None and any(
        g.protocol == proto and g.ports.first <= port <= g.ports.last for g in guard.ports
    )
    if guarded_port and _within(address, guard.node_addrs):
        return f"node guard: {address} is a node address and port {port} a node service"
    return None


def _from_own_node(pod: model.Pod, address: str, cluster: calc_desired.Cluster) -> bool:
    node = cluster.nodes.get(pod.node_name or "")
    return node is not None and _same_address(address, node.addresses)


def _matches(
    direction: ruleset.Direction,
    pod: model.Pod,
    peer: Endpoint,
    proto: int,
    port: int | None,
    cluster: calc_desired.Cluster,
    isolating: Sequence[str],
) -> tuple[Match, ...]:
    found = []
    for policy in calc_compile.policies_selecting(pod, cluster.policies.candidates(pod)):
        if policy.key not in isolating:
            continue
        rules = policy.ingress if direction is ruleset.Direction.INGRESS else policy.egress
        for r, rule in enumerate(rules):
            peer_text = _peer_match(policy, rule, peer, cluster.namespaces)
            if peer_text is None:
                continue
            port_text = _port_match(direction, pod, peer, rule, proto, port)
            if port_text is not None:
                found.append(Match(policy.key, r, peer_text, port_text))
    return tuple(found)


def _peer_match(
    policy: model.NetworkPolicy,
    rule: model.PolicyRule,
    peer: Endpoint,
    namespaces: Mapping[str, model.Namespace],
) -> str | None:
    """How `peer` matches one of the rule's peers (`#index kind`), or None."""
    if not rule.peers:
        return "any (no from/to)"
    for i, entry in enumerate(rule.peers):
        if entry.invalid:
            continue
        if entry.ip_block is not None:
            if entry.pod_selector is None and entry.namespace_selector is None:
                block = entry.ip_block
                if _within_cidr(peer.address, block.cidr) and not any(
                    _within_cidr(peer.address, e) for e in block.excepts
                ):
                    return f"{i} (ipBlock {block.cidr})"
            continue
        other = peer.pod
        if other is None or not calc_compile.is_peer_candidate(other):
            continue
        if entry.namespace_selector is None:
            if entry.pod_selector is None or other.namespace != policy.namespace:
                continue
        elif not selectors.matches(
            entry.namespace_selector, calc_compile.namespace_labels(other.namespace, namespaces)
        ):
            continue
        if entry.pod_selector is not None and not selectors.matches(
            entry.pod_selector, other.labels
        ):
            continue
        kind = "namespaceSelector" if entry.namespace_selector is not None else "podSelector"
        both = kind == "namespaceSelector" and entry.pod_selector
        return f"{i} ({kind}" + ("+podSelector)" if both else ")")
    return None


def _port_match(
    direction: ruleset.Direction,
    pod: model.Pod,
    peer: Endpoint,
    rule: model.PolicyRule,
    proto: int,
    port: int | None,
) -> str | None:
    if not rule.ports:
        return "any"
    # A named port is the one declared by the connection's destination pod (for egress, one
    # that can be a peer at all: a finished pod's name no longer holds its address).
    destination = pod if direction is ruleset.Direction.INGRESS else peer.pod
    if destination is not None and destination is not pod:
        destination = destination if calc_compile.is_peer_candidate(destination) else None
    for entry in rule.ports:
        if entry.invalid or ruleset.PROTOCOL_NUMBERS.get(entry.protocol) != proto:
            continue
        if isinstance(entry.port, str):
            if entry.end_port is not None or destination is None or port is None:
                continue
            if any(
                cp.name == entry.port and cp.protocol == entry.protocol and cp.port == port
                for cp in destination.container_ports
            ):
                return f"{entry.protocol}/{entry.port} ({port})"
            continue
        if entry.port is None:
            if entry.end_port is None:
                return f"{entry.protocol}/any"
            continue
        last = entry.end_port if entry.end_port is not None else entry.port
        if port is not None and entry.port <= port <= last <= intervals.MAX_PORT:
            return f"{entry.protocol}/{entry.port}" + (f"-{last}" if last != entry.port else "")
    return None


def _within(address: str, ranges: Sequence[ruleset.AddrRange]) -> bool:
    addr = ipaddress.ip_address(address)
    return intervals.contains(ranges, addr.version, int(addr))


def _within_cidr(address: str, cidr: str) -> bool:
    addr = ipaddress.ip_address(address)
    network = ipaddress.ip_network(cidr, strict=False)
    return addr.version == network.version and addr in network


def _same_address(address: str, addresses: Sequence[str]) -> bool:
    wanted = ipaddress.ip_address(address)
    for other in addresses:
        try:
            if ipaddress.ip_address(other) == wanted:
                return True
        except ValueError:
            continue
    return False
