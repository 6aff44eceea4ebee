"""Aggregate logged drops into flows over a short window, and fold unknown addresses. Pure.

A flow is (the pod whose namespace logged it, direction, reason, mode, source, destination,
protocol, destination port) within one window: a storm of connection attempts from one peer
to one port is one flow with many packets, not thousands of lines. Addresses that belong to
no known pod are folded to their /24 (IPv4) or /64 (IPv6), so external scanners cannot blow
up the number of flows either, and the table is capped per window (the excess is counted).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable

from agent.dataplane.nft import render as render_nft
from agent.flows import nflog

EXTERNAL_PREFIX = {4: 24, 6: 64}


@dataclasses.dataclass(frozen=True, order=True)
class FlowKey:
    pod: str  # namespace/name of the pod whose rules dropped (or would drop) the packets
    direction: str
    reason: str
    mode: str
    src: str  # an address, or a folded CIDR for an address that is no pod
    dst: str
    protocol: int
    dport: int | None


@dataclasses.dataclass
class FlowStats:
    packets: int
    first: float
    last: float


def fold(ip: str, is_pod: Callable[[str], bool]) -> str:
    """`ip` itself when it is a pod's address, else its /24 or /64 network."""
    if is_pod(ip):
        return ip
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    network = ipaddress.ip_network(f"{ip}/{EXTERNAL_PREFIX[address.version]}", strict=False)
    return str(network)


class Aggregator:
    """Flows of the current window; `flush` hands them over and starts the next window."""

    def __init__(self, max_flows: int = 10000) -> None:
        self.max_flows = max_flows
        self.flows: dict[FlowKey, FlowStats] = {}
        self.overflow = 0  # packets of flows beyond `max_flows` in this window
        self.foreign = 0  # packets whose prefix is not podseg's

    def add(
        self, pod: str, packet: nflog.Packet, now: float, is_pod: Callable[[str], bool]
    ) -> bool:
        parsed = render_nft.parse_log_prefix(packet.prefix)
        if parsed is None:
            self.foreign += 1
            return False
        direction, reason, mode = parsed
        key = FlowKey(
            pod=pod,
            direction=direction,
            reason=reason,
            mode=mode,
            src=fold(packet.src, is_pod),
            dst=fold(packet.dst, is_pod),
            protocol=packet.protocol,
            dport=packet.dport,
        )
        stats = self.flows.get(key)
        if stats is None:
            if len(self.flows) >= self.max_flows:
                self.overflow += 1
                return True
            self.flows[key] = FlowStats(1, now, now)
        else:
            stats.packets += 1
            stats.last = now
        return True

    def flush(self) -> list[tuple[FlowKey, FlowStats]]:
        out = sorted(self.flows.items())
        self.flows = {}
        return out
