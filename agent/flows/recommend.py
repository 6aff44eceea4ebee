"""NetworkPolicies that allow exactly the traffic a namespace's workloads were seen using:
what `podseg recommend` prints. Pure.

Why: writing the first policies of a running application is guesswork; the flow graph already
holds what the workloads do. One policy per workload selects its pods by their shared labels
and isolates both directions; each rule names one peer (a workload by its namespace's
`kubernetes.io/metadata.name` label and its pods' labels, or an external network as an
ipBlock) with the ports seen, by name where the destination pods declare the port. Traffic
seen `allowed` or `would-drop` is kept (both pass today); `dropped` traffic is not. Every
workload may resolve names: egress to the cluster DNS (kube-system pods labelled
`k8s-app: kube-dns`, UDP and TCP 53) is always included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from agent.flows import graph

NAMESPACE_LABEL = "kubernetes.io/metadata.name"
DNS_NAMESPACE = "kube-system"
DNS_LABELS = {"k8s-app": "kube-dns"}
DNS_PORT = 53
KEPT = ("allowed", "would-drop")
PORTED = ("TCP", "UDP", "SCTP")


# Labels that name a revision, a pod or podseg's own switches: a selector on them breaks at the
# next rollout or mode change, so selectors leave them out.
UNSTABLE_LABELS = frozenset(
    {
        "pod-template-hash",
        "controller-revision-hash",
        "statefulset.kubernetes.io/pod-name",
        "apps.kubernetes.io/pod-index",
        "batch.kubernetes.io/controller-uid",
        "controller-uid",
    }
)
UNSTABLE_PREFIXES = ("podseg.io/",)


class UnknownNamespace(ValueError):
    """The graph knows no namespace of that name (the message lists those it knows)."""


@dataclasses.dataclass(frozen=True)
class Recommendation:
    policies: tuple[dict[str, Any], ...]
    notes: tuple[str, ...]  # traffic the policies cannot express, workloads without labels


def _labels(labels: Mapping[str, str]) -> dict[str, Any]:
    return {"matchLabels": dict(sorted(labels.items()))}


def stable_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels a selector of the workload's pods may use (`UNSTABLE_LABELS` left out)."""
    return {
        k: v
        for k, v in labels.items()
        if k not in UNSTABLE_LABELS and not k.startswith(UNSTABLE_PREFIXES)
    }


def _peer(end: graph.Endpoint, workloads: Mapping[tuple[str, str], graph.Workload]) -> Any:
    if end.external:
        return {"ipBlock": {"cidr": end.external}}
    found = workloads.get((end.namespace, end.workload))
    labels = stable_labels(found.labels) if found is not None else {}
    return {
        "namespaceSelector": _labels({NAMESPACE_LABEL: end.namespace}),
        "podSelector": _labels(labels),
    }


def _port(protocol: str, port: int | None, destination: graph.Workload | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"protocol": protocol}
    if port is None:
        return entry
    named = [
        p.name
        for p in (destination.ports if destination is not None else ())
        if p.port == port and p.protocol == protocol
    ]
    entry["port"] = sorted(named)[0] if named else port
    return entry


def _is_dns(key: graph.FlowKey, workloads: Mapping[tuple[str, str], graph.Workload]) -> bool:
    dst = workloads.get((key.dst.namespace, key.dst.workload))
    return (
        dst is not None
        and dst.namespace == DNS_NAMESPACE
        and all(dst.labels.get(k) == v for k, v in DNS_LABELS.items())
        and key.port == DNS_PORT
        and key.protocol in ("UDP", "TCP")
    )


def _rules(
    flows: list[graph.FlowKey],
    peer_of: str,
    workloads: Mapping[tuple[str, str], graph.Workload],
) -> list[dict[str, Any]]:
    """One rule per peer, with every port seen to or from it (sorted, deduplicated)."""
    by_peer: dict[graph.Endpoint, set[tuple[str, int, str]]] = {}
    for key in flows:
        peer = key.src if peer_of == "src" else key.dst
        dst = workloads.get((key.dst.namespace, key.dst.workload))
        port = _port(key.protocol, key.port, dst).get("port")
        sort_port = -1 if port is None else port if isinstance(port, int) else 0
        by_peer.setdefault(peer, set()).add((key.protocol, sort_port, str(port or "")))
    rules = []
    for peer in sorted(by_peer, key=lambda e: (e.external, e.namespace, e.workload)):
        ports = []
        for protocol, _, port in sorted(by_peer[peer]):
            entry: dict[str, Any] = {"protocol": protocol}
            if port:
                entry["port"] = int(port) if port.isdigit() else port
            ports.append(entry)
        side = "from" if peer_of == "src" else "to"
        rules.append({side: [_peer(peer, workloads)], "ports": ports})
    return rules


def _dns_rule() -> dict[str, Any]:
    return {
        "to": [
            {
                "namespaceSelector": _labels({NAMESPACE_LABEL: DNS_NAMESPACE}),
                "podSelector": _labels(DNS_LABELS),
            }
        ],
        "ports": [
            {"protocol": "UDP", "port": DNS_PORT},
            {"protocol": "TCP", "port": DNS_PORT},
        ],
    }


def policy_for(
    workload: graph.Workload,
    flows: tuple[graph.Flow, ...],
    workloads: Mapping[tuple[str, str], graph.Workload],
) -> dict[str, Any]:
    """The NetworkPolicy of one workload: its observed ingress and egress, plus DNS."""
    me = graph.Endpoint(workload.namespace, workload.name)
    kept = [f.key for f in flows if f.key.verdict in KEPT and f.key.protocol in PORTED]
    # A flow from a workload to itself is between two of its pods: both sides need a rule.
    ingress = [k for k in kept if k.dst == me]
    egress = [k for k in kept if k.src == me and not _is_dns(k, workloads)]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": f"{workload.name}-observed",
            "namespace": workload.namespace,
            "labels": {"app.kubernetes.io/managed-by": "podseg-recommend"},
        },
        "spec": {
            "podSelector": _labels(stable_labels(workload.labels)),
            "policyTypes": ["Ingress", "Egress"],
            "ingress": _rules(ingress, "src", workloads),
            "egress": [_dns_rule(), *_rules(egress, "dst", workloads)],
        },
    }


def recommend(graph_doc: graph.FlowGraph, namespace: str) -> Recommendation:
    """One policy per workload of `namespace` (sorted by name), and notes on what they leave
    out. `UnknownNamespace` when the graph knows no such namespace."""
    known = sorted(set(graph_doc.namespaces) | {w.namespace for w in graph_doc.workloads})
    if namespace not in known:
        raise UnknownNamespace(
            f"no namespace {namespace!r} in the flow graph (it has: {', '.join(known) or 'none'})"
        )
    workloads = {(w.namespace, w.name): w for w in graph_doc.workloads}
    touching: dict[graph.Endpoint, list[graph.Flow]] = {}  # each flow under both its ends
    for flow in graph_doc.flows:
        touching.setdefault(flow.key.src, []).append(flow)
        if flow.key.dst != flow.key.src:
            touching.setdefault(flow.key.dst, []).append(flow)
    notes = []
    policies = []
    for w in sorted(graph_doc.workloads, key=lambda w: w.name):
        if w.namespace != namespace:
            continue
        if not stable_labels(w.labels):
            notes.append(
                f"{namespace}/{w.name}: its pods share no stable label; no policy selects it"
            )
            continue
        seen = tuple(touching.get(graph.Endpoint(w.namespace, w.name), ()))
        policies.append(policy_for(w, seen, workloads))
    for flow in graph_doc.flows:
        key = flow.key
        mine = namespace in (key.src.namespace, key.dst.namespace)
        if not mine or key.verdict not in KEPT:
            continue
        for peer in (key.src, key.dst):
            found = workloads.get((peer.namespace, peer.workload))
            if not peer.external and (found is None or not stable_labels(found.labels)):
                notes.append(
                    f"peer {_name(peer)}: its pods share no stable label; the rules naming it "
                    f"admit every pod of namespace {peer.namespace}"
                )
        if key.protocol not in PORTED:
            notes.append(
                f"{_name(key.src)} -> {_name(key.dst)} {key.protocol}: NetworkPolicy cannot "
                "name this protocol; it is dropped once the pods are isolated"
            )
    return Recommendation(tuple(policies), tuple(dict.fromkeys(notes)))


def _name(end: graph.Endpoint) -> str:
    return end.external or f"{end.namespace}/{end.workload}"
