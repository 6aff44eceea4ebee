"""Render a `PodRuleset` into one atomic `nft -f` transaction for the pod's network namespace.

Pure text generation, so the exact kernel program is unit-testable and its fingerprint can be
compared with what a namespace already holds (skip the apply when equal). Layout, per owned
table (`table inet podseg`, plus `table netdev podseg` when egress is isolated):

    input  (hook)  : iif lo accept; established/related accept unless the conntrack entry
                     carries DENY_MARK; ICMPv6 link plumbing; jump ingress_policy;
                     jump ingress_deny
    ingress_policy : one rule per non-empty set: saddr in *_any{4,6}, or
                     saddr . l4proto . dport in *_ports{4,6} -> accept
    ingress_deny   : counter drop
    output (hook)  : oif lo accept; established/related accept; ICMPv6 link plumbing;
                     jump egress_policy; jump egress_deny
    egress_policy  : the same with daddr; an accept also clears DENY_MARK on the conntrack entry
    egress_deny    : packets leaving through an interface without a netdev hook: counter drop;
                     others: counter, set DENY_MARK on packet and conntrack entry, accept
    netdev egress_<if> (hook egress on each interface): DENY_MARK set -> counter drop

Denied egress is decided in `output` but dropped in the device egress hook, because a drop in
`output` makes a local UDP send() fail with EPERM; applications must instead see a silent
timeout. The conntrack mark stops a denied flow's conntrack entry (created in output, confirmed
before the device drop) from letting "replies" in past the ingress policy. Later features slot
in as chains: quarantine (jumped first from input/output), node guard (before egress_policy),
visibility mode (a different *_deny body), NFLOG (`log group N` in *_deny), Service addresses
(more set elements). The per-packet cost is a constant number of rules; all peers live in sets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import re
from collections.abc import Sequence

from agent.policy import ruleset

TABLE = "podseg"
DENY_MARK = 0x00100000
FORMAT_VERSION = "podseg-nft/1"
FINGERPRINT_CHARS = 16
COMMENT_MAX_BYTES = 127  # the kernel keeps at most 128 bytes of table comment (with NUL)

_MARK = f"0x{DENY_MARK:08x}"
_CLEAR_MARK = f"0x{0xFFFFFFFF & ~DENY_MARK:08x}"
_FP_RE = re.compile(r'comment "podseg fp=([0-9a-f]{16})[ "]')
_COMMENT_RE = re.compile(r'comment "(podseg fp=[0-9a-f]{16}[^"]*)"')
_BAD_IFNAME = re.compile(r'[\s/:"\\]|[^\x21-\x7e]')
_PROTOCOL_NAMES = {number: name.lower() for name, number in ruleset.PROTOCOL_NUMBERS.items()}
_ICMPV6_LINK = (
    "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, "
    "nd-neighbor-advert } ip6 hoplimit 255 accept",
    "icmpv6 type { mld-listener-query, mld-listener-report, mld-listener-done, "
    "mld2-listener-report } ip6 hoplimit 1 accept",
)


@dataclasses.dataclass(frozen=True)
class Rendered:
    """A complete `nft -f` script and the fingerprint it tags the table with."""

    script: str
    fingerprint: str


def delete_script() -> str:
    """Remove every table podseg owns in a namespace; succeeds when they are absent."""
    return "".join(_delete_prelude())


def parse_fingerprint(listing: str) -> str | None:
    """The fingerprint in the output of `nft list table inet podseg`, if it is ours."""
    match = _FP_RE.search(listing)
    return match.group(1) if match else None


def parse_comment(listing: str) -> str | None:
    """The whole owner comment (`podseg fp=... pod=<ns>/<name>`) of a listed table, if ours."""
    match = _COMMENT_RE.search(listing)
    return match.group(1) if match else None


def render(rs: ruleset.PodRuleset, interfaces: Sequence[str]) -> Rendered:
    """The script that atomically replaces podseg's tables with `rs`.

    `interfaces` are the pod's network interfaces (they must exist when the script is
    loaded): denied egress is dropped in a device egress hook on each of them. Raises
    ValueError for a name that is not a valid interface name.
    """
    ifaces = canonical_interfaces(interfaces)
    body = _inet_body(rs, ifaces)
    netdev = _netdev_table(ifaces) if rs.egress.isolated and ifaces else []
    fp = fingerprint_of(rs, body + netdev)
    pod = _sanitize(f"{rs.namespace}/{rs.pod}")
    comment = f"podseg fp={fp} pod={pod}".encode()[:COMMENT_MAX_BYTES].decode(errors="ignore")
    lines = [
        *_delete_prelude(),
        f"table inet {TABLE} {{\n",
        f'  comment "{comment}"\n',
        *body,
        "}\n",
        *netdev,
    ]
    return Rendered(script="".join(lines), fingerprint=fp)


def fingerprint_of(rs: ruleset.PodRuleset, content: Sequence[str]) -> str:
    """Hash of everything the table stands for: format version, identity, mode, policies and
    the rendered content (which covers every set element, rule and interface)."""
    digest = hashlib.sha256()
    header = [
        FORMAT_VERSION,
        f"{rs.namespace}/{rs.pod}",
        str(rs.mode),
        "ingress=" + ",".join(rs.ingress.policies),
        "egress=" + ",".join(rs.egress.policies),
    ]
    for part in (*header, *content):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def canonical_interfaces(interfaces: Sequence[str]) -> tuple[str, ...]:
    """Sorted, de-duplicated interface names; ValueError for an invalid name."""
    for name in interfaces:
        if not 1 <= len(name.encode()) <= 15 or name in {".", ".."} or _BAD_IFNAME.search(name):
            raise ValueError(f"invalid interface name {name!r}")
    return tuple(sorted(set(interfaces)))


def format_addr(r: ruleset.AddrRange) -> str:
    """An address range as nft text: `a`, `a/len` when it is exactly a prefix, else `a-b`."""
    bits = 32 if r.family == 4 else 128
    first = ipaddress.ip_address(r.first) if r.family == 4 else ipaddress.IPv6Address(r.first)
    if r.first == r.last:
        return str(first)
    size = r.last - r.first + 1
    if size & (size - 1) == 0 and r.first % size == 0:
        return f"{first}/{bits - (size.bit_length() - 1)}"
    last = ipaddress.ip_address(r.last) if r.family == 4 else ipaddress.IPv6Address(r.last)
    return f"{first}-{last}"


def format_ports(p: ruleset.PortRange) -> str:
    """`80` or `80-81`."""
    return str(p.first) if p.first == p.last else f"{p.first}-{p.last}"


def format_protocol(number: int) -> str:
    """`tcp`, `udp`, `sctp`, or the protocol number."""
    return _PROTOCOL_NAMES.get(number, str(number))


def set_name(direction: ruleset.Direction, kind: str, family: int) -> str:
    """Name of a peer set, e.g. `ingress_any4`, `egress_ports6`."""
    return f"{direction.value}_{kind}{family}"


def interface_chains(ifaces: Sequence[str]) -> list[tuple[str, str]]:
    """(chain name, interface) for each canonical interface; names are unique."""
    out: list[tuple[str, str]] = []
    used: set[str] = set()
    for iface in ifaces:
        base = "egress_" + re.sub(r"[^A-Za-z0-9_]", "_", iface)
        name, n = base, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        out.append((name, iface))
    return out


def _delete_prelude() -> list[str]:
    return [
        f"table inet {TABLE}\n",
        f"delete table inet {TABLE}\n",
        f"table netdev {TABLE}\n",
        f"delete table netdev {TABLE}\n",
    ]


def _sanitize(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._/-]", "_", text)


def _inet_body(rs: ruleset.PodRuleset, ifaces: Sequence[str]) -> list[str]:
    out: list[str] = []
    policy_rules: dict[ruleset.Direction, list[str]] = {}
    for direction, d in (
        (ruleset.Direction.INGRESS, rs.ingress),
        (ruleset.Direction.EGRESS, rs.egress),
    ):
        if d.isolated:
            sets, rules = _direction_sets(direction, d)
            out.extend(sets)
            policy_rules[direction] = rules
    if not policy_rules:
        return out
    out.append(_chain("ipv6_link", [], list(_ICMPV6_LINK)))
    if ruleset.Direction.INGRESS in policy_rules:
        out.append(
            _chain(
                "input",
                ["type filter hook input priority filter; policy accept;"],
                [
                    'iif "lo" accept',
                    f"ct state established,related ct mark & {_MARK} == 0x00000000 accept",
                    "meta nfproto ipv6 jump ipv6_link",
                    "jump ingress_policy",
                    "jump ingress_deny",
                ],
            )
        )
        out.append(_chain("ingress_policy", [], policy_rules[ruleset.Direction.INGRESS]))
        out.append(_chain("ingress_deny", [], ["counter drop"]))
    if ruleset.Direction.EGRESS in policy_rules:
        out.append(
            _chain(
                "output",
                ["type filter hook output priority filter; policy accept;"],
                [
                    'oif "lo" accept',
                    "ct state established,related accept",
                    "meta nfproto ipv6 jump ipv6_link",
                    "jump egress_policy",
                    "jump egress_deny",
                ],
            )
        )
        out.append(_chain("egress_policy", [], policy_rules[ruleset.Direction.EGRESS]))
        out.append(_chain("egress_deny", [], _egress_deny_rules(ifaces)))
    return out


def _egress_deny_rules(ifaces: Sequence[str]) -> list[str]:
    if not ifaces:
        return ["counter drop"]  # no device hook would drop a marked packet: fail closed here
    names = ", ".join(f'"{i}"' for i in ifaces)
    return [
        f"oifname != {{ {names} }} counter drop",
        f"counter meta mark set meta mark | {_MARK} ct mark set ct mark | {_MARK} accept",
    ]


def _direction_sets(
    direction: ruleset.Direction, d: ruleset.DirectionRuleset
) -> tuple[list[str], list[str]]:
    """Set definitions and the matching accept rules of one isolated direction."""
    key = "saddr" if direction is ruleset.Direction.INGRESS else "daddr"
    verdict = (
        "accept"
        if direction is ruleset.Direction.INGRESS
        else (f"ct mark set ct mark & {_CLEAR_MARK} accept")
    )
    sets: list[str] = []
    rules: list[str] = []
    for family, ip, addr_type in ((4, "ip", "ipv4_addr"), (6, "ip6", "ipv6_addr")):
        elements = [format_addr(r) for r in d.any_port_peers if r.family == family]
        if elements:
            name = set_name(direction, "any", family)
            sets.append(_set(name, addr_type, elements))
            rules.append(f"{ip} {key} @{name} {verdict}")
    for family, ip, addr_type in ((4, "ip", "ipv4_addr"), (6, "ip6", "ipv6_addr")):
        elements = [
            f"{format_addr(e.addrs)} . {format_protocol(e.protocol)} . {format_ports(e.ports)}"
            for e in d.port_peers
            if e.addrs.family == family
        ]
        if elements:
            name = set_name(direction, "ports", family)
            sets.append(_set(name, f"{addr_type} . inet_proto . inet_service", elements))
            rules.append(f"{ip} {key} . meta l4proto . th dport @{name} {verdict}")
    return sets, rules


def _set(name: str, type_: str, elements: Sequence[str]) -> str:
    joined = ",\n      ".join(elements)
    return (
        f"  set {name} {{\n    type {type_}\n    flags interval\n"
        f"    elements = {{\n      {joined}\n    }}\n  }}\n"
    )


def _chain(name: str, header: Sequence[str], rules: Sequence[str]) -> str:
    lines = [f"  chain {name} {{\n"]
    lines.extend(f"    {h}\n" for h in header)
    lines.extend(f"    {r}\n" for r in rules)
    lines.append("  }\n")
    return "".join(lines)


def _netdev_table(ifaces: Sequence[str]) -> list[str]:
    out = [f"table netdev {TABLE} {{\n"]
    for chain, iface in interface_chains(ifaces):
        out.append(
            _chain(
                chain,
                [f'type filter hook egress device "{iface}" priority filter; policy accept;'],
                [f"meta mark & {_MARK} == {_MARK} counter drop"],
            )
        )
    out.append("}\n")
    return out


def netdev_table(ifaces: Sequence[str]) -> list[str]:
    """The `table netdev podseg` egress-drop definition alone (the iptables backend reuses it:
    marked packets are dropped in each interface's egress hook)."""
    return _netdev_table(canonical_interfaces(ifaces))
