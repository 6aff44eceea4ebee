"""Turn NFLOG samples into workload edges, counting each connection once. Pure.

The per-node flow store (`agent.flows.flowstore`) keeps flows between workloads, not pods:
(source workload, destination workload or external network, protocol, port, verdict), with a
count and the first and last time seen. A workload is the owning controller's name (a
ReplicaSet's Deployment), or the pod's own name for a bare pod; an address that is no pod is
folded to its /24 or /64 (`aggregate.fold`).

Count once: an allowed connection is sampled both where it leaves (the source's egress
policy, when isolated) and where it arrives (the destination's ingress, when isolated or in
visibility mode, where what the default lets through is sampled too). It is counted
at the destination's ingress when the destination is a pod whose ingress podseg samples
(`ingress_sampled`), so two nodes never count the same connection; an egress sample counts
only when the destination is not such a pod (an external address, or a pod whose ingress is
not isolated). A drop is counted where it was logged: a connection dropped at the source's
egress never reaches the destination.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

from agent import model
from agent.dataplane.nft import render as render_nft
from agent.flows import aggregate, nflog

NO_PORT = -1  # the stored port of a protocol without ports
VERDICTS = {"enforce": "dropped", "visibility": "would-drop"}
_PROTOCOLS = {6: "TCP", 17: "UDP", 132: "SCTP", 1: "ICMP", 58: "ICMPv6", nflog.ARP: "ARP"}


@dataclasses.dataclass(frozen=True, order=True)
class EdgeKey:
    """One edge of the workload graph. An end is a workload (`*_namespace`, `*_workload`) or,
    with both empty, an external network (`*_external`)."""

    src_namespace: str
    src_workload: str
    src_external: str
    dst_namespace: str
    dst_workload: str
    dst_external: str
    protocol: str
    port: int  # NO_PORT for protocols without ports
    verdict: str  # allowed | dropped | would-drop


@dataclasses.dataclass
class EdgeStats:
    count: int
    first: float
    last: float


def workload_name(pod: model.Pod) -> str:
    """The workload a pod belongs to: its owner's name, or its own name for a bare pod."""
    return pod.workload or pod.name


def protocol_name(number: int) -> str:
    return _PROTOCOLS.get(number, str(number))


def _end(ip: str, pods: Mapping[str, model.Pod]) -> tuple[str, str, str]:
    pod = pods.get(ip)
    if pod is None:
        return "", "", aggregate.fold(ip, pods.__contains__)
    return pod.namespace, workload_name(pod), ""


def classify(
    packet: nflog.Packet,
    pods: Mapping[str, model.Pod],
    ingress_sampled: Callable[[model.Pod], bool] = lambda _pod: True,
) -> EdgeKey | None:
    """The edge a sample counts for, or None: not podseg's prefix, or counted elsewhere.

    `pods`: every pod by IP (cluster-wide); `ingress_sampled(pod)`: whether the pod's own
    ingress samples the connections it accepts (its ingress is isolated)."""
    verdict = ""
    direction = render_nft.parse_accept_prefix(packet.prefix)
    if direction is not None:
        verdict = "allowed"
        if direction == "egress":
            destination = pods.get(packet.dst)
            if destination is not None and ingress_sampled(destination):
                return None  # counted at the destination's ingress
    else:
        parsed = render_nft.parse_log_prefix(packet.prefix)
        if parsed is None:
            return None
        verdict = VERDICTS.get(parsed[2], parsed[2])
    src, dst = _end(packet.src, pods), _end(packet.dst, pods)
    port = packet.dport if packet.dport is not None else NO_PORT
    return EdgeKey(*src, *dst, protocol_name(packet.protocol), port, verdict)


class Edges:
    """The edges of the current window; `flush` hands them over (to the store's writer)."""

    def __init__(self, max_edges: int = 10000) -> None:
        self.max_edges = max_edges
        self.edges: dict[EdgeKey, EdgeStats] = {}
        self.overflow = 0

    def add(self, key: EdgeKey, now: float) -> None:
        stats = self.edges.get(key)
        if stats is not None:
            stats.count += 1
            stats.last = max(stats.last, now)
        elif len(self.edges) >= self.max_edges:
            self.overflow += 1
        else:
            self.edges[key] = EdgeStats(1, now, now)

    def flush(self) -> list[tuple[EdgeKey, EdgeStats]]:
        out = sorted(self.edges.items())
        self.edges = {}
        return out


def merge(batches: Iterable[Iterable[tuple[EdgeKey, EdgeStats]]]) -> dict[EdgeKey, EdgeStats]:
    """Several windows' edges as one: counts summed, earliest first, latest last seen."""
    out: dict[EdgeKey, EdgeStats] = {}
    for batch in batches:
        for key, stats in batch:
            seen = out.get(key)
            if seen is None:
                out[key] = EdgeStats(stats.count, stats.first, stats.last)
            else:
                seen.count += stats.count
                seen.first = min(seen.first, stats.first)
                seen.last = max(seen.last, stats.last)
    return out
