"""Breach containment that NetworkPolicy cannot express: quarantine and the node guard. Pure.

NetworkPolicy only adds allows and says nothing about the node. Containment instead takes
things away, above every policy: a quarantined pod (label `podseg.io/quarantine=true`) sends
and receives nothing but forensic traffic (annotation `podseg.io/quarantine-allow-from`, a
comma-separated list of CIDRs), and every managed pod is kept away from the nodes' management
ports and the cloud metadata address (the node guard), unless its namespace is exempt: named
in `--node-guard-exempt-namespaces` (by default `kube-system`, where metrics-server, cloud
controllers and CSI controllers reach the kubelet or the metadata service) or labelled
`podseg.io/node-guard=off` (a monitoring namespace whose Prometheus scrapes the kubelets). A
namespace labelled `podseg.io/node-guard=allow-metadata` may reach the cloud metadata address
(workloads that use the node's cloud identity) and stays guarded from the node ports.

`contain` decorates a compiled `PodRuleset` with both; the renderer puts them before any policy
chain. A bad annotation entry never lifts a quarantine: it is skipped and reported.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Collection, Iterable, Mapping, Sequence

from agent import model
from agent.calc import intervals, ruleset

QUARANTINE_LABEL = "podseg.io/quarantine"
ALLOW_FROM_ANNOTATION = "podseg.io/quarantine-allow-from"
NODE_GUARD_LABEL = "podseg.io/node-guard"
METADATA_ADDRESSES = ("169.254.169.254",)
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


def node_addresses(nodes: Iterable[model.Node]) -> tuple[ruleset.AddrRange, ...]:
    """Every node's addresses as canonical ranges (unparsable ones skipped)."""
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
) -> ruleset.NodeGuard | None:
    """The node guard of a pod in `namespace` (named `name`); None when it is exempt."""
    if node_guard_exempt(namespace, exempt, name):
        return None
    metadata = _guard_label(namespace) != ALLOW_METADATA
    return ruleset.NodeGuard(
        node_addrs=node_addresses(nodes),
        ports=tuple(ports),
        blocked=intervals.merge_addrs(intervals.address_range(a) for a in METADATA_ADDRESSES)
        if metadata
        else (),
    )


def contain(
    rs: ruleset.PodRuleset,
    pod: model.Pod,
    namespace: model.Namespace | None,
    nodes: Iterable[model.Node],
    guard_ports: Sequence[ruleset.ProtoPorts] | None,
    widest: tuple[int, int] = WIDEST_ALLOW_FROM,
    guard_exempt: Collection[str] = DEFAULT_NODE_GUARD_EXEMPT,
) -> Contained:
    """`rs` with the pod's quarantine and node guard; `guard_ports` None disables the guard;
    `widest`: the widest forensic source allowed (see `allow_from`); `guard_exempt`: the
    namespaces exempt from the guard by name."""
    errors: list[str] = []
    quarantine = None
    if is_quarantined(pod):
        allowed, errors = allow_from(pod.annotations, widest)
        quarantine = ruleset.Quarantine(allow_from=allowed)
    guard = (
        node_guard(namespace, nodes, guard_ports, guard_exempt, pod.namespace)
        if guard_ports is not None
        else None
    )
    return Contained(
        dataclasses.replace(rs, quarantine=quarantine, node_guard=guard), tuple(errors)
    )


def parse_widest(text: str) -> tuple[int, int]:
    """`V4,V6` shortest prefix lengths (e.g. `16,48`); ValueError otherwise."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError("expected two prefix lengths V4,V6 such as 16,48")
    v4, v6 = int(parts[0]), int(parts[1])
    if not (1 <= v4 <= 32 and 1 <= v6 <= 128):
        raise ValueError("prefix lengths must be 1-32 (IPv4) and 1-128 (IPv6)")
    return v4, v6
