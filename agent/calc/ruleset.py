"""The desired ruleset of one pod: what the compiler produces and the renderers consume.

It is deliberately backend-neutral and canonical: address ranges are disjoint, sorted and
merged, so two compiles of the same snapshot give equal rulesets (and so equal fingerprints)
whatever the order of events that built the snapshot. Later features (visibility mode,
quarantine, node guard, Service translation, anti-spoofing) add fields here, not new shapes.
"""

from __future__ import annotations

import dataclasses
import enum

PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}
# Not an IANA number: in a tier entry's elements, every protocol without ports (ICMP, ...),
# always with the full port range.
OTHER_PROTOCOL = 256


class Direction(enum.StrEnum):
    INGRESS = "ingress"
    EGRESS = "egress"


class PolicyMode(enum.StrEnum):
    """How denied packets are treated: dropped (`enforce`), or logged and accepted
    (`visibility`: the same ruleset is programmed, would-drops are counted and logged)."""

    ENFORCE = "enforce"
    VISIBILITY = "visibility"


@dataclasses.dataclass(frozen=True, order=True)
class AddrRange:
    """An inclusive range of addresses of one family (4 or 6), as integers."""

    family: int
    first: int
    last: int


@dataclasses.dataclass(frozen=True, order=True)
class PortRange:
    """An inclusive range of L4 ports."""

    first: int
    last: int


@dataclasses.dataclass(frozen=True, order=True)
class PeerPort:
    """Peer addresses x protocol (IANA number) x destination ports: one set element."""

    addrs: AddrRange
    protocol: int
    ports: PortRange


@dataclasses.dataclass(frozen=True)
class DirectionRuleset:
    """What one direction of a pod allows.

    `isolated` False: everything passes. Otherwise a packet passes when its peer address is in
    `any_port_peers` (rules without ports: any protocol, any port) or its (peer, protocol,
    destination port) is in `port_peers`. Both tuples are canonical: sorted and disjoint.
    `policies` names ("namespace/name") the policies that isolate this direction.
    `per_policy` holds what each of those policies allows on its own (same canonical form), so
    the dataplane can count the packets each policy lets in or out (per-policy hit counters);
    the decision itself only ever uses the union above.
    """

    isolated: bool = False
    any_port_peers: tuple[AddrRange, ...] = ()
    port_peers: tuple[PeerPort, ...] = ()
    policies: tuple[str, ...] = ()
    per_policy: tuple[PolicyPeers, ...] = ()
    # The admin tiers (ClusterNetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy):
    # `admin` is judged before everything above, `baseline` only when the direction is not
    # isolated. Within a tier the entries are in precedence order: the first holding a
    # packet decides.
    admin: tuple[TierEntry, ...] = ()
    baseline: tuple[TierEntry, ...] = ()

    @property
    def tiered(self) -> bool:
        """Whether anything is judged in this direction (a policy or an admin tier)."""
        return self.isolated or bool(self.admin) or bool(self.baseline)


class TierAction(enum.StrEnum):
    """What an admin-tier entry does with the packets it holds."""

    ACCEPT = "accept"
    DENY = "deny"
    PASS = "pass"  # on to the next tier


@dataclasses.dataclass(frozen=True)
class TierEntry:
    """One admin-tier rule as it applies to one pod and direction: the policy
    ("ClusterNetworkPolicy/name", ...) and rule it comes from, its action, and its elements
    (peer x protocol x destination ports; protocol OTHER_PROTOCOL for the protocols without
    ports), canonical."""

    policy: str
    rule: str
    action: TierAction
    elements: tuple[PeerPort, ...]
    # The same region factored, when it is a product (a rule without named ports): exactly
    # every address of `addrs` x every protocol and ports of `ports`, both canonical. The
    # dataplane may then hold addresses and ports in separate sets, so that an edit of the
    # rule's ports changes a few elements, not one per peer address. None: not a product.
    addrs: tuple[AddrRange, ...] | None = None
    ports: tuple[ProtoPorts, ...] = ()


@dataclasses.dataclass(frozen=True)
class PolicyPeers:
    """What one policy (key "namespace/name") allows in one direction of one pod: its own
    `any_port_peers` and `port_peers`, canonical. A packet matching them is allowed (the union
    contains them), so a counter on them counts that policy's hits."""

    policy: str
    any_port_peers: tuple[AddrRange, ...] = ()
    port_peers: tuple[PeerPort, ...] = ()


@dataclasses.dataclass(frozen=True)
class PodRuleset:
    """The complete desired state for one pod's network namespace."""

    namespace: str
    pod: str
    ingress: DirectionRuleset = dataclasses.field(default_factory=DirectionRuleset)
    egress: DirectionRuleset = dataclasses.field(default_factory=DirectionRuleset)
    mode: PolicyMode = PolicyMode.ENFORCE
    quarantine: Quarantine | None = None
    node_guard: NodeGuard | None = None
    anti_spoof: AntiSpoof | None = None
    link: Link = dataclasses.field(default_factory=lambda: Link())


@dataclasses.dataclass(frozen=True)
class Link:
    """What the agent saw of the pod's own namespace (its interfaces and routes), as opposed to
    the API snapshot: the link-scoped facts neighbour discovery and the node guard need.

    `link_local`: the IPv6 link-local addresses of the pod's interfaces. `gateways`: the next
    hops of its routes (the pod's gateway, on many CNIs the node itself), link-local ones
    excepted; `scoped_gateways`: the link-local next hops, each with its interface (a
    link-local address means something only on its link). `onlink`: the destinations of its
    routes without a next hop (neighbours it resolves directly). All canonical."""

    link_local: tuple[AddrRange, ...] = ()
    gateways: tuple[AddrRange, ...] = ()
    scoped_gateways: tuple[tuple[str, AddrRange], ...] = ()
    onlink: tuple[AddrRange, ...] = ()


@dataclasses.dataclass(frozen=True)
class AntiSpoof:
    """Every packet leaving the pod's interfaces must carry one of `own` (its addresses) as
    its source, or one of `link_local` (its IPv6 link-local addresses) for neighbour discovery
    only; ARP must announce one of its IPv4 addresses. Canonical."""

    own: tuple[AddrRange, ...] = ()
    link_local: tuple[AddrRange, ...] = ()


@dataclasses.dataclass(frozen=True)
class Quarantine:
    """A quarantined pod: every packet in and out is dropped, before any policy or mode,
    except traffic with `allow_from` (forensic access: connections from these sources and
    the pod's replies to them). Canonical: sorted and merged."""

    allow_from: tuple[AddrRange, ...] = ()


@dataclasses.dataclass(frozen=True)
class ProtoPorts:
    """A protocol (IANA number) and a destination port range: one guarded service."""

    protocol: int
    ports: PortRange


@dataclasses.dataclass(frozen=True)
class NodeGuard:
    """Egress the pod may never send, whatever the policies allow.

    Packets to `node_addrs` (every node's InternalIP/ExternalIP, the pod's gateways, the
    configured extra addresses) on `ports`, the same to `scoped` (link-local gateways, each on
    its interface), and every packet to `blocked` (cloud metadata), are dropped. The address
    tuples are canonical.
    """

    node_addrs: tuple[AddrRange, ...] = ()
    ports: tuple[ProtoPorts, ...] = ()
    blocked: tuple[AddrRange, ...] = ()
    scoped: tuple[tuple[str, AddrRange], ...] = ()
