"""The sandbox's address plan, as pure functions.

Every address the sandbox hands out comes from here, so the plan is written down once and can be
unit-tested without root. All addresses lie in 198.18.0.0/15 (RFC 2544 benchmarking space) and
fd00:198:18::/48, which nothing else on a test machine uses.

Plan (node index is 1-based, in order of `Sandbox.add_node`):

- node 1: bridge 198.18.0.1/17, fd00:198:18:1::1/64; pods 198.18.1.1 ... 198.18.127.254
- node 2: bridge 198.18.128.1/17, fd00:198:18:2::1/64; pods 198.18.129.1 ...
- node 3, 4, 5: 198.19.0.0/18, 198.19.64.0/18, 198.19.128.0/18 (bridge .1 of the block),
  fd00:198:18:<index>::1/64; pods from the second /24 of the block on
- pods hold their addresses as /32 and /128 with a default route via the bridge address
- pod IPv6 address: the IPv4 address's last two octets written as two hex groups of the same
  digits, e.g. 198.18.129.7 -> fd00:198:18:2::129:7
- node-to-node links (full mesh, pair number p = 0, 1, ...): 198.19.255.<4p+1>/30 and
  198.19.255.<4p+2>/30, fd00:198:18:ff::<4p+1>/126 and fd00:198:18:ff::<4p+2>/126
"""

from __future__ import annotations

import dataclasses
import ipaddress

_NODE_NETWORKS_V4 = (
    "198.18.0.0/17",
    "198.18.128.0/17",
    "198.19.0.0/18",
    "198.19.64.0/18",
    "198.19.128.0/18",
)
MAX_NODES = len(_NODE_NETWORKS_V4)
_LINK_NETWORK_V4 = ipaddress.IPv4Network("198.19.255.0/24")
_LINK_NETWORK_V6 = ipaddress.IPv6Network("fd00:198:18:ff::/64")
_HOSTS_PER_OCTET = 254  # .1 ... .254 of every /24, so no address ends in .0 or .255


@dataclasses.dataclass(frozen=True)
class NodePlan:
    """The addresses of one sandbox node: its bridge and the pod networks behind it."""

    index: int
    bridge_v4: ipaddress.IPv4Interface
    bridge_v6: ipaddress.IPv6Interface

    @property
    def pod_network_v4(self) -> ipaddress.IPv4Network:
        """The IPv4 network of the node's bridge, which holds all its pods."""
        return self.bridge_v4.network

    @property
    def pod_network_v6(self) -> ipaddress.IPv6Network:
        """The IPv6 /64 of the node's bridge, which holds all its pods."""
        return self.bridge_v6.network

    @property
    def max_pods(self) -> int:
        """How many pod addresses the plan can hand out on this node."""
        return (self.pod_network_v4.num_addresses // 256 - 1) * _HOSTS_PER_OCTET


@dataclasses.dataclass(frozen=True)
class LinkPlan:
    """The point-to-point addresses of the link between two nodes (a = lower node index)."""

    pair: int
    a_v4: ipaddress.IPv4Interface
    b_v4: ipaddress.IPv4Interface
    a_v6: ipaddress.IPv6Interface
    b_v6: ipaddress.IPv6Interface


def node_plan(index: int) -> NodePlan:
    """Return the plan of the node with this 1-based index."""
    if not 1 <= index <= MAX_NODES:
        raise ValueError(f"node index {index} outside 1..{MAX_NODES}")
    network = ipaddress.IPv4Network(_NODE_NETWORKS_V4[index - 1])
    bridge_v4 = ipaddress.IPv4Interface(f"{network.network_address + 1}/{network.prefixlen}")
    bridge_v6 = ipaddress.IPv6Interface(f"fd00:198:18:{index:x}::1/64")
    return NodePlan(index=index, bridge_v4=bridge_v4, bridge_v6=bridge_v6)


def pod_addresses(
    plan: NodePlan, ordinal: int
) -> tuple[ipaddress.IPv4Address, ipaddress.IPv6Address]:
    """Return the addresses of the node's pod number `ordinal` (0-based).

    Pods hold them as host addresses (/32, /128) behind their node's gateway; see
    `testbed.sandbox.topology` for why.
    """
    if not 0 <= ordinal < plan.max_pods:
        raise ValueError(f"pod ordinal {ordinal} outside 0..{plan.max_pods - 1}")
    block = 1 + ordinal // _HOSTS_PER_OCTET
    host = 1 + ordinal % _HOSTS_PER_OCTET
    v4 = plan.pod_network_v4.network_address + block * 256 + host
    third, fourth = v4.packed[2], v4.packed[3]
    v6 = ipaddress.IPv6Address(f"fd00:198:18:{plan.index:x}::{third}:{fourth}")
    return v4, v6


def pair_number(index_a: int, index_b: int) -> int:
    """Return the number of the link between two nodes (order-insensitive, dense from 0)."""
    low, high = sorted((index_a, index_b))
    if low < 1 or high > MAX_NODES or low == high:
        raise ValueError(f"no link between nodes {index_a} and {index_b}")
    # Pairs (1,2)=0, (1,3)=1, (2,3)=2, (1,4)=3, ...: numbered by the higher node first.
    return (high - 1) * (high - 2) // 2 + (low - 1)


def link_plan(index_a: int, index_b: int) -> LinkPlan:
    """Return the addresses of the link between two nodes; side a is the lower index."""
    pair = pair_number(index_a, index_b)
    base = 4 * pair
    v4_base = _LINK_NETWORK_V4.network_address + base
    v6_base = _LINK_NETWORK_V6.network_address + base
    return LinkPlan(
        pair=pair,
        a_v4=ipaddress.IPv4Interface(f"{v4_base + 1}/30"),
        b_v4=ipaddress.IPv4Interface(f"{v4_base + 2}/30"),
        a_v6=ipaddress.IPv6Interface(f"{v6_base + 1}/126"),
        b_v6=ipaddress.IPv6Interface(f"{v6_base + 2}/126"),
    )
