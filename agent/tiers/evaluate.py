"""The meaning of the admin tiers for one connection, evaluated directly. Pure.

This is the reference: `podseg explain` and `podseg whatif` answer with it, and the compiled
per-pod rulesets are tested against it. Precedence for one direction of one managed pod:
the Admin tier (policies by priority, rules in order, first match wins: Accept and Deny are
final, Pass skips the rest of the tier), then NetworkPolicy (final for a pod it isolates), then
the Baseline tier (first match wins), then the Kubernetes default: allow.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping

from agent import model, selectors
from agent.tiers import model as tiers

INGRESS = "ingress"
EGRESS = "egress"


@dataclasses.dataclass(frozen=True)
class Remote:
    """The other end of the connection: a pod (with its namespace's labels), a node (its
    labels), or only an address."""

    address: str
    pod: model.Pod | None = None
    namespace_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    node_labels: Mapping[str, str] | None = None


@dataclasses.dataclass(frozen=True)
class Match:
    """The rule that decided: its policy, tier and action."""

    tier: str
    policy: str  # ClusterPolicy.key
    rule: str
    action: str


def selects(subject: tiers.Subject, pod: model.Pod, namespace_labels: Mapping[str, str]) -> bool:
    """Whether a policy's subject selects `pod` (host-network pods never)."""
    if pod.host_network:
        return False
    if subject.namespaces is not None:
        return selectors.matches(subject.namespaces, namespace_labels)
    if subject.pods is not None:
        return _pods_match(subject.pods, pod, namespace_labels)
    return False


def _pods_match(
    pods: tiers.NamespacedPods, pod: model.Pod, namespace_labels: Mapping[str, str]
) -> bool:
    return selectors.matches(pods.namespace_selector, namespace_labels) and selectors.matches(
        pods.pod_selector, pod.labels
    )


def _in_networks(address: str, networks: Iterable[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net) for net in networks)


def peer_matches(peer: tiers.Peer, remote: Remote, direction: str) -> bool:
    """Whether one `from`/`to` entry selects `remote` (unknown and invalid peers: never)."""
    if peer.invalid or peer.unknown:
        return False
    if peer.networks:
        return direction == EGRESS and _in_networks(remote.address, peer.networks)
    if peer.nodes is not None:
        return (
            direction == EGRESS
            and remote.node_labels is not None
            and selectors.matches(peer.nodes, remote.node_labels)
        )
    pod = remote.pod
    if pod is None or pod.host_network:
        return False
    if peer.namespaces is not None:
        return selectors.matches(peer.namespaces, remote.namespace_labels)
    if peer.pods is not None:
        return _pods_match(peer.pods, pod, remote.namespace_labels)
    return False


def port_matches(
    ports: tuple[tiers.Port, ...], protocol: str, port: int, destination: model.Pod | None
) -> bool:
    """Whether the destination `protocol`/`port` is one of `ports` (empty: every port). A
    named port resolves against the destination pod's declared container ports."""
    if not ports:
        return True
    for entry in ports:
        if entry.invalid:
            continue
        if entry.named is not None:
            if destination is not None and any(
                cp.name == entry.named and cp.port == port and cp.protocol == protocol
                for cp in destination.container_ports
            ):
                return True
            continue
        if entry.protocol != protocol:
            continue
        if entry.start is None or (entry.end is not None and entry.start <= port <= entry.end):
            return True
    return False


def rule_matches(
    rule: tiers.Rule,
    remote: Remote,
    direction: str,
    protocol: str,
    port: int,
    destination: model.Pod | None,
) -> str | None:
    """The action `rule` takes on the connection, or None when it does not match. A Deny or
    Pass rule with a peer of a kind this agent does not know denies everything (fail closed,
    as the API asks)."""
    if not rule.action:
        return None
    if rule.action != tiers.ACCEPT and any(p.unknown for p in rule.peers):
        return tiers.DENY
    if not any(peer_matches(p, remote, direction) for p in rule.peers):
        return None
    if not port_matches(rule.ports, protocol, port, destination):
        return None
    return rule.action


def first_match(
    policies: Iterable[tiers.ClusterPolicy],
    tier: str,
    direction: str,
    pod: model.Pod,
    namespace_labels: Mapping[str, str],
    remote: Remote,
    protocol: str,
    port: int,
) -> Match | None:
    """The first rule of `tier` that matches, for the managed `pod` in `direction`
    (ingress: `remote` connects to the pod; egress: the pod connects to `remote`)."""
    destination = pod if direction == INGRESS else remote.pod
    for policy in sorted((p for p in policies if p.tier == tier), key=lambda p: p.order):
        if not selects(policy.subject, pod, namespace_labels):
            continue
        rules = policy.ingress if direction == INGRESS else policy.egress
        for rule in rules:
            action = rule_matches(rule, remote, direction, protocol, port, destination)
            if action is not None:
                return Match(tier=tier, policy=policy.key, rule=rule.name, action=action)
    return None


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The decision for one direction: allowed or not, and which tier decided (`policy` is
    the deciding admin policy's key, "" for NetworkPolicy and the default)."""

    allowed: bool
    tier: str  # "admin" | "networkpolicy" | "baseline" | "default"
    policy: str = ""
    rule: str = ""


def decide(
    admin: Match | None, isolated: bool, networkpolicy_allows: bool, baseline: Match | None
) -> Verdict:
    """Combine the tiers: Admin (unless it passed), NetworkPolicy for a pod it isolates,
    Baseline (unless it passed), then allow."""
    if admin is not None and admin.action != tiers.PASS:
        return Verdict(admin.action == tiers.ACCEPT, "admin", admin.policy, admin.rule)
    if isolated:
        return Verdict(networkpolicy_allows, "networkpolicy")
    if baseline is not None and baseline.action != tiers.PASS:
        return Verdict(baseline.action == tiers.ACCEPT, "baseline", baseline.policy, baseline.rule)
    return Verdict(True, "default")
