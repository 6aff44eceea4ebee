"""Replay recorded flows against a set of NetworkPolicies: what `podseg whatif` and the tests of
`podseg recommend` ask. Pure.

Why here and not a second policy engine: a flow graph names workloads, not pods, so each
workload becomes one stand-in pod (its shared labels, its named ports, a made-up address) and
each external network one address inside it; every flow is then judged by the very calculation
the agent programs (`agent.calc.explain`, which runs `calc.desired` and `calc.verdict`). The
policy semantics live only there.

Verdicts are the graph's: `allowed`, `dropped`, `would-drop` (visibility mode: the policies
would drop it, the kernel lets it through). Flows of protocols that NetworkPolicy cannot name
(ICMP) are not judged.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agent import model
from agent.calc import desired as calc_desired
from agent.calc import explain as calc_explain
from agent.calc import ruleset
from agent.flows import graph
from agent.k8s import convert

NODE = "replay-node"
# Stand-in pod addresses: the first pool that no external network of the graph overlaps.
_POOLS = ("198.18.0.0/15", "100.64.0.0/10", "fd00:198:18::/48")
FLOWING = ("allowed", "would-drop")


class ReplayError(ValueError):
    """The graph cannot be replayed (the message says why, for a one-line error)."""


@dataclasses.dataclass(frozen=True)
class World:
    """The stand-in snapshot: one pod per workload, the policies, and every endpoint's address."""

    cluster: calc_desired.Cluster
    pods: Mapping[tuple[str, str], model.Pod]  # (namespace, workload) -> stand-in pod


@dataclasses.dataclass(frozen=True)
class Change:
    """A flow whose verdict differs between the policies in force and the candidates."""

    flow: graph.Flow
    before: str
    after: str

    @property
    def breaks(self) -> bool:
        """A flow that passes now and that the candidates drop (or would drop once enforced)."""
        return self.before in FLOWING and (
            self.after == "dropped" or (self.before == "allowed" and self.after == "would-drop")
        )


def policy_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or "default"), str(meta.get("name") or ""))


def with_candidates(
    current: Iterable[Mapping[str, Any]], candidates: Iterable[Mapping[str, Any]]
) -> tuple[Mapping[str, Any], ...]:
    """The policies in force with the candidates added; a candidate with the namespace and
    name of a policy in force replaces it."""
    merged = {policy_key(p): p for p in current}
    for candidate in candidates:
        merged[policy_key(candidate)] = candidate
    return tuple(merged[k] for k in sorted(merged))


def _pool(graph_doc: graph.FlowGraph) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    externals = [_network(f.key.src) for f in graph_doc.flows if f.key.src.external] + [
        _network(f.key.dst) for f in graph_doc.flows if f.key.dst.external
    ]
    for text in _POOLS:
        pool = ipaddress.ip_network(text)
        if not any(pool.overlaps(e) for e in externals if e.version == pool.version):
            return pool
    raise ReplayError("the graph's external networks overlap every stand-in address pool")


def _network(end: graph.Endpoint) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(end.external, strict=False)
    except ValueError:
        raise ReplayError(f"external endpoint {end.external!r} is not a network") from None


def address_of(network: str) -> str:
    """The address that stands for an external network: its first host."""
    net = ipaddress.ip_network(network, strict=False)
    return str(net[1] if net.num_addresses > 1 else net[0])


def world(graph_doc: graph.FlowGraph, policies: Sequence[Mapping[str, Any]]) -> World:
    """The stand-in snapshot of `graph_doc` with `policies` (API objects) in force."""
    pool = _pool(graph_doc)
    names = set(graph_doc.namespaces) | {w.namespace for w in graph_doc.workloads}
    namespaces = {
        name: model.Namespace(name, dict(graph_doc.namespaces.get(name, {}))) for name in names
    }
    pods: dict[tuple[str, str], model.Pod] = {}
    ordered = sorted(graph_doc.workloads, key=lambda w: (w.namespace, w.name))
    for i, w in enumerate(ordered):
        pods[(w.namespace, w.name)] = model.Pod(
            namespace=w.namespace,
            name=f"{w.name}-replay",
            uid=f"replay-{i}",
            labels=dict(w.labels),
            node_name=NODE,
            ips=(str(pool[i + 2]),),
            container_ports=tuple(model.ContainerPort(p.port, p.protocol, p.name) for p in w.ports),
            phase="Running",
            workload=w.name,
        )
    cluster = calc_desired.Cluster.of(
        pods=pods.values(),
        namespaces=namespaces,
        policies=[convert.network_policy(p) for p in policies],
        nodes=[model.Node(NODE)],
    )
    return World(cluster, pods)


def _endpoint(world_: World, end: graph.Endpoint) -> calc_explain.Endpoint | None:
    if end.external:
        return calc_explain.Endpoint(address_of(end.external))
    pod = world_.pods.get((end.namespace, end.workload))
    if pod is None:
        return None
    return calc_explain.Endpoint(pod.ips[0], pod)


def judge(world_: World, key: graph.FlowKey) -> str | None:
    """The verdict of one flow in `world_`, or None when it cannot be judged (a protocol
    NetworkPolicy cannot name, or an endpoint the graph does not describe)."""
    if key.protocol.upper() not in ruleset.PROTOCOL_NUMBERS:
        return None
    src, dst = _endpoint(world_, key.src), _endpoint(world_, key.dst)
    if src is None or dst is None:
        return None
    outcome = calc_explain.explain(src, dst, key.protocol, key.port, world_.cluster).verdict
    return "dropped" if outcome == calc_explain.DENIED else outcome


def replay(
    graph_doc: graph.FlowGraph, candidates: Sequence[Mapping[str, Any]]
) -> tuple[Change, ...]:
    """Every flow of `graph_doc` whose verdict changes when `candidates` join the policies in
    force, in the graph's flow order."""
    before = world(graph_doc, graph_doc.policies)
    after = world(graph_doc, with_candidates(graph_doc.policies, candidates))
    changes = []
    for flow in graph_doc.flows:
        was, will = judge(before, flow.key), judge(after, flow.key)
        if was is not None and will is not None and was != will:
            changes.append(Change(flow, was, will))
    return tuple(changes)


def unjudged(graph_doc: graph.FlowGraph) -> tuple[graph.Flow, ...]:
    """The flows `replay` cannot judge: protocols NetworkPolicy cannot name, endpoints that
    are no workload of the graph."""
    known = {(w.namespace, w.name) for w in graph_doc.workloads}
    return tuple(
        f
        for f in graph_doc.flows
        if f.key.protocol.upper() not in ruleset.PROTOCOL_NUMBERS
        or any(
            not e.external and (e.namespace, e.workload) not in known
            for e in (f.key.src, f.key.dst)
        )
    )
