"""Breach containment that NetworkPolicy cannot express: quarantine, the node guard and
anti-spoofing. Pure.

NetworkPolicy only adds allows and says nothing about the node. Containment instead takes
things away, above every policy: a quarantined pod (label `podseg.io/quarantine=true`) sends
and receives nothing but forensic traffic (annotation `podseg.io/quarantine-allow-from`, a
comma-separated list of CIDRs); every managed pod is kept away from the nodes' management
ports, its own gateway's and the cloud metadata addresses (the node guard), unless its
namespace is exempt: named in `--node-guard-exempt-namespaces` (by default `kube-system`,
where metrics-server, cloud controllers and CSI controllers reach the kubelet or the metadata
service) or labelled `podseg.io/node-guard=off` (a monitoring namespace whose Prometheus
scrapes the kubelets). A namespace labelled `podseg.io/node-guard=allow-metadata` may reach
the cloud metadata addresses (workloads that use the node's cloud identity) and stays guarded
from the node ports. And every managed pod may only send from its own addresses
(anti-spoofing) unless its namespace carries `podseg.io/anti-spoofing=off` (pods that route
for others: VPN or NAT gateways).

`contain` decorates a compiled `PodRuleset` with all three; the renderer puts them before any
policy chain. A bad annotation entry never lifts a quarantine: it is skipped and reported.
What the agent saw of the pod's own namespace (`ruleset.Link`: its link-local addresses,
gateways and on-link routes) comes in through `link`, which builds it from the scan's text.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import ipaddress
import re
from collections.abc import Collection, Iterable, Mapping, Sequence

from agent import model
from agent.calc import intervals, memo, ruleset

QUARANTINE_LABEL = "podseg.io/quarantine"
ALLOW_FROM_ANNOTATION = "podseg.io/quarantine-allow-from"
NODE_GUARD_LABEL = "podseg.io/node-guard"
ANTI_SPOOF_LABEL = "podseg.io/anti-spoofing"
# Always blocked on every port (docs/architecture.md, containment, says why each): the
# instance metadata service of AWS, Azure, GCP, OpenStack, Oracle and DigitalOcean, AWS's over
# IPv6, Alibaba Cloud's. Each serves the node's cloud credentials to whoever asks.
METADATA_ADDRESSES = ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
ALLOW_METADATA = "allow-metadata"  # podseg.io/node-guard value: metadata reachable, ports guarded
# Namespaces exempt from the node guard by name unless configured otherwise: kube-system holds
# what must reach the kubelet (metrics-server) or the metadata service (cloud controllers).
DEFAULT_NODE_GUARD_EXEMPT = ("kube-system",)
DEFAULT_NODE_GUARD_PORTS = (
    "tcp:22,tcp:139,tcp:445,tcp:2379-2380,tcp:3389,udp:3389,"
    "tcp:10250,tcp:10255,tcp:30000-32767,udp:30000-32767,sctp:30000-32767"
)
# The widest forensic source a quarantine annotation may name: /16 (IPv4), /48 (IPv6).
WIDEST_ALLOW_FROM = (16, 48)
_TRUE = frozenset({"true", "yes", "1", "on"})
_OFF = frozenset({"off", "false", "disabled", "0"})


@dataclasses.dataclass(frozen=True)
class Contained:
    """A ruleset with containment applied, and what was wrong with the pod's annotations."""

    ruleset: ruleset.PodRuleset
    errors: tuple[str, ...] = ()


def is_quarantined(pod: model.Pod) -> bool:
    """Whether the pod carries the quarantine label (`true`, case-insensitive)."""
    return pod.labels.get(QUARANTINE_LABEL, "").strip().lower() in _TRUE


def allow_from(
    annotations: Mapping[str, str], widest: tuple[int, int] = WIDEST_ALLOW_FROM
) -> tuple[tuple[ruleset.AddrRange, ...], list[str]]:
    """The forensic sources of the annotation, canonical, and a message per bad entry.

    A forensic source reopens a quarantined pod to it, so an entry wider than `widest`
    (shortest prefix length for IPv4, IPv6) is refused, and a default route (/0) always is:
    an annotation must never undo the quarantine it qualifies."""
    raw = annotations.get(ALLOW_FROM_ANNOTATION, "")
    ranges: list[ruleset.AddrRange] = []
    errors: list[str] = []
    for part in raw.split(","):
        entry = part.strip()
        if not entry:
            continue
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            errors.append(f"{ALLOW_FROM_ANNOTATION}: {entry!r} is not a CIDR; ignored")
            continue
        shortest = widest[0] if network.version == 4 else widest[1]
        if network.prefixlen == 0 or network.prefixlen < shortest:
            errors.append(f"{ALLOW_FROM_ANNOTATION}: {entry!r} is wider than /{shortest}; ignored")
            continue
        ranges.append(intervals.cidr_range(entry))
    return intervals.merge_addrs(ranges), errors


def node_guard_exempt(
    namespace: model.Namespace | None, exempt: Collection[str] = (), name: str = ""
) -> bool:
    """Whether the namespace (`name`, or `namespace.name`) is exempt: named in `exempt`, or
    opted out with `podseg.io/node-guard=off`."""
    if (name or (namespace.name if namespace is not None else "")) in exempt:
        return True
    if namespace is None:
        return False
    return _guard_label(namespace) in _OFF


def _guard_label(namespace: model.Namespace | None) -> str:
    if namespace is None:
        return ""
    return namespace.labels.get(NODE_GUARD_LABEL, "").strip().lower()


def parse_namespaces(text: str) -> tuple[str, ...]:
    """`kube-system,monitoring` -> sorted distinct names; empty or `-`: none. Raises
    ValueError."""
    if text.strip() == "-":
        return ()
    names = sorted({part.strip() for part in text.split(",") if part.strip()})
    for name in names:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
            raise ValueError(f"{name!r} is not a namespace name")
    return tuple(names)


def parse_ports(text: str) -> tuple[ruleset.ProtoPorts, ...]:
    """`tcp:22,udp:3389,tcp:30000-32767` -> canonical guarded services. Raises ValueError."""
    out: list[ruleset.ProtoPorts] = []
    for part in text.split(","):
        entry = part.strip()
        if not entry:
            continue
        proto, sep, ports = entry.partition(":")
        number = ruleset.PROTOCOL_NUMBERS.get(proto.strip().upper())
        if not sep or number is None:
            raise ValueError(f"{entry!r}: expected tcp|udp|sctp:PORT[-PORT]")
        first, dash, last = ports.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"{entry!r}: bad port")
        low, high = int(first), int(last) if dash else int(first)
        if not 1 <= low <= high <= intervals.MAX_PORT:
            raise ValueError(f"{entry!r}: ports must be 1-65535, low to high")
        out.append(ruleset.ProtoPorts(number, ruleset.PortRange(low, high)))
    by_proto: dict[int, list[ruleset.PortRange]] = {}
    for item in out:
        by_proto.setdefault(item.protocol, []).append(item.ports)
    return tuple(
        ruleset.ProtoPorts(proto, ports)
        for proto in sorted(by_proto)
        for ports in intervals.merge_ports(by_proto[proto])
    )


def parse_addresses(text: str) -> tuple[ruleset.AddrRange, ...]:
    """`198.18.9.1,fd00::/64` -> canonical ranges. Raises ValueError for an entry that is not
    an address or CIDR, and for a default route (/0: that guards no host, it guards all)."""
    out = []
    for part in text.split(","):
        entry = part.strip()
        if not entry:
            continue
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"{entry!r}: expected an IP address or CIDR") from None
        if network.prefixlen == 0:
            raise ValueError(f"{entry!r}: a default route is not a host address")
        out.append(intervals.cidr_range(entry))
    return intervals.merge_addrs(out)


def node_addresses(nodes: Iterable[model.Node]) -> tuple[ruleset.AddrRange, ...]:
    """Every node's addresses as canonical ranges (unparsable ones skipped); parsed once for
    the very same Node objects (`_NODE_ADDRS`)."""
    held = tuple(nodes)
    return _NODE_ADDRS.get((), held, lambda: _parse_node_addresses(held))


# The node guard of every local pod holds every node's addresses, and a pod's result is
# derived again at each event that touches it: parsing a cluster's node addresses each time
# grew with the cluster (~5 us an address, twice per pod and event). A Node that changes is a
# new object: a new key.
_NODE_ADDRS: memo.ByIdentity[tuple[ruleset.AddrRange, ...]] = memo.ByIdentity(4)


def _parse_node_addresses(nodes: Iterable[model.Node]) -> tuple[ruleset.AddrRange, ...]:
    ranges = []
    for node in nodes:
        for address in node.addresses:
            try:
                ranges.append(intervals.address_range(address))
            except ValueError:
                continue
    return intervals.merge_addrs(ranges)


def node_guard(
    namespace: model.Namespace | None,
    nodes: Iterable[model.Node],
    ports: Sequence[ruleset.ProtoPorts],
    exempt: Collection[str] = (),
    name: str = "",
    *,
    link: ruleset.Link | None = None,
    extra: Sequence[ruleset.AddrRange] = (),
) -> ruleset.NodeGuard | None:
    """The node guard of a pod in `namespace` (named `name`); None when it is exempt. Guarded
    like node addresses: every node's, the pod's gateways (`link`: on many CNIs the node's
    own listeners answer there) and the configured `extra` addresses."""
    if node_guard_exempt(namespace, exempt, name):
        return None
    metadata = _guard_label(namespace) != ALLOW_METADATA
    link = link or ruleset.Link()
    return ruleset.NodeGuard(
        node_addrs=intervals.merge_addrs([*node_addresses(nodes), *link.gateways, *extra]),
        ports=tuple(ports),
        blocked=_metadata_ranges() if metadata else (),
        scoped=link.scoped_gateways,
    )


@functools.cache
def _metadata_ranges() -> tuple[ruleset.AddrRange, ...]:
    return intervals.merge_addrs(intervals.address_range(a) for a in METADATA_ADDRESSES)


def anti_spoof_exempt(namespace: model.Namespace | None) -> bool:
    """Whether the namespace opted out (`podseg.io/anti-spoofing=off`)."""
    if namespace is None:
        return False
    return namespace.labels.get(ANTI_SPOOF_LABEL, "").strip().lower() in _OFF


def anti_spoof(
    pod: model.Pod, namespace: model.Namespace | None, link: ruleset.Link | None = None
) -> ruleset.AntiSpoof | None:
    """The sources `pod` may send from: its IPs, and its link-local addresses (`link`) for
    neighbour discovery; None when its namespace is exempt. A pod label has no say."""
    if anti_spoof_exempt(namespace):
        return None
    own = []
    for ip in pod.ips:
        try:
            own.append(intervals.address_range(ip))
        except ValueError:
            continue
    return ruleset.AntiSpoof(
        own=intervals.merge_addrs(own),
        link_local=link.link_local if link is not None else (),
    )


def link(link_local: Iterable[str], routes: Iterable[tuple[str, str | None, str]]) -> ruleset.Link:
    """The canonical `Link` of a pod's namespace from the scan: its interfaces' IPv6
    link-local addresses, and its routes as (destination prefix, next hop or None, interface).
    Unparsable entries are skipped."""
    local, gateways, scoped, onlink = [], [], set(), []
    for address in link_local:
        with contextlib.suppress(ValueError):
            local.append(intervals.address_range(address))
    for dst, gateway, interface in routes:
        try:
            if gateway is None:
                network = ipaddress.ip_network(dst, strict=False)
                if network.prefixlen:  # a default route without next hop: no neighbour
                    onlink.append(intervals.cidr_range(str(network)))
            elif ipaddress.ip_address(gateway).is_link_local and ":" in gateway:
                scoped.add((interface, intervals.address_range(gateway)))
            else:
                gateways.append(intervals.address_range(gateway))
        except ValueError:
            continue
    return ruleset.Link(
        link_local=intervals.merge_addrs(local),
        gateways=intervals.merge_addrs(gateways),
        scoped_gateways=tuple(sorted(scoped)),
        onlink=intervals.merge_addrs(onlink),
    )


def lockdown(rs: ruleset.PodRuleset) -> ruleset.PodRuleset:
    """`rs` for a contested namespace (it holds the addresses of several pods: at least one
    of them is an impostor): quarantined without forensic sources, so it neither sends nor
    receives anything, whatever any of the pods' policies allow."""
    return dataclasses.replace(rs, quarantine=ruleset.Quarantine())


def contain(
    rs: ruleset.PodRuleset,
    pod: model.Pod,
    namespace: model.Namespace | None,
    nodes: Iterable[model.Node],
    guard_ports: Sequence[ruleset.ProtoPorts] | None,
    widest: tuple[int, int] = WIDEST_ALLOW_FROM,
    guard_exempt: Collection[str] = DEFAULT_NODE_GUARD_EXEMPT,
    *,
    link: ruleset.Link | None = None,
    guard_extra: Sequence[ruleset.AddrRange] = (),
) -> Contained:
    """`rs` with the pod's quarantine, node guard and anti-spoofing, and the facts of its
    namespace (`link`); `guard_ports` None disables the guard, `guard_extra` are more
    addresses it guards; `widest`: the widest forensic source allowed (see `allow_from`);
    `guard_exempt`: the namespaces exempt from the guard by name."""
    errors: list[str] = []
    quarantine = None
    if is_quarantined(pod):
        allowed, errors = allow_from(pod.annotations, widest)
        quarantine = ruleset.Quarantine(allow_from=allowed)
    guard = None
    if guard_ports is not None:
        guard = node_guard(
            namespace,
            nodes,
            guard_ports,
            guard_exempt,
            pod.namespace,
            link=link,
            extra=guard_extra,
        )
    contained = dataclasses.replace(
        rs,
        quarantine=quarantine,
        node_guard=guard,
        anti_spoof=anti_spoof(pod, namespace, link),
        link=link or ruleset.Link(),
    )
    return Contained(contained, tuple(errors))


def parse_widest(text: str) -> tuple[int, int]:
    """`V4,V6` shortest prefix lengths (e.g. `16,48`); ValueError otherwise."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError("expected two prefix lengths V4,V6 such as 16,48")
    v4, v6 = int(parts[0]), int(parts[1])
    if not (1 <= v4 <= 32 and 1 <= v6 <= 128):
        raise ValueError("prefix lengths must be 1-32 (IPv4) and 1-128 (IPv6)")
    return v4, v6
