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

Incremental updates: a rendered ruleset is also split into its *skeleton* (the script with every
named set's elements removed) and its *sets* (qualified set name -> element texts). Every peer
set of an isolated direction is always declared (empty or not), so a change of peers alone keeps
the skeleton and can be committed as element deletes/adds (`agent.dataplane.nft.incremental`). The
table comment carries the skeleton's fingerprint (`shape`, fixed for the table's life since any
other change replaces the table); the fingerprint of the whole ruleset lives in the one rule of
the unhooked chain `state` (`podseg state=<16 hex>`), replaced in the same transaction as the
elements. The split is done on the rendered text, so it covers any set any feature declares.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import re
from collections.abc import Sequence

from agent.calc import ruleset

TABLE = "podseg"
DENY_MARK = 0x00100000
FORMAT_VERSION = "podseg-nft/2"
FINGERPRINT_CHARS = 16
COMMENT_MAX_BYTES = 127  # the kernel keeps at most 128 bytes of table comment (with NUL)

# Drop capture (agent/flows): every deny rule logs to this NFLOG group of the pod's own
# namespace, rate-limited in the kernel per rule so a flood cannot starve the reader, and
# counts into a named counter per direction/reason/mode (exact packet totals).
NFLOG_GROUP = 2100
LOG_RATE = "100/second burst 50 packets"
LOG_SNAPLEN = 128
LOG_QUEUE_THRESHOLD = 16
LOG_PREFIX = "podseg"
COUNTER_PREFIX = "deny"

_MARK = f"0x{DENY_MARK:08x}"
_CLEAR_MARK = f"0x{0xFFFFFFFF & ~DENY_MARK:08x}"
_FP_RE = re.compile(r'comment "podseg state=([0-9a-f]{16})"')
STATE_CHAIN = "state"
_TABLE_RE = re.compile(r"^table (\S+) " + TABLE + r" \{$")
_SET_RE = re.compile(r"^  set (\S+) \{$")
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
    """A complete `nft -f` script and the fingerprint it tags the table with.

    `shape` fingerprints the skeleton (everything but set elements); `sets` holds each named
    set's elements as `("<family> <set>", (element, ...))`, sorted by name; both feed the
    incremental patch (`agent.dataplane.nft.incremental`).
    """

    script: str
    fingerprint: str
    shape: str = ""
    sets: tuple[tuple[str, tuple[str, ...]], ...] = ()


def delete_script() -> str:
    """Remove every table podseg owns in a namespace; succeeds when they are absent."""
    return "".join(_delete_prelude())


def parse_fingerprint(listing: str) -> str | None:
    """The fingerprint in the output of `nft list table inet podseg`, if it is ours.

    It is the comment of the rule in chain `state` (not the table comment, which holds the
    shape fingerprint): a table without that rule is never taken for current."""
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
    netdev = _netdev_table(ifaces) if needs_netdev(rs) and ifaces else []
    fp = fingerprint_of(rs, body + netdev)
    tables = [f"table inet {TABLE} {{\n", *body, "}\n", *netdev]
    skeleton, sets = split_sets("".join(tables))
    shape = fingerprint_of(rs, ["shape", skeleton])
    pod = _sanitize(f"{rs.namespace}/{rs.pod}")
    comment = f"podseg fp={shape} pod={pod}".encode()[:COMMENT_MAX_BYTES].decode(errors="ignore")
    lines = [
        *_delete_prelude(),
        f"table inet {TABLE} {{\n",
        f'  comment "{comment}"\n',
        *body,
        _chain(STATE_CHAIN, [], [state_rule(fp)]),
        "}\n",
        *netdev,
    ]
    return Rendered(script="".join(lines), fingerprint=fp, shape=shape, sets=sets)


def state_rule(fingerprint: str) -> str:
    """The one rule of chain `state`: never evaluated (no hook, no jump), it only carries the
    fingerprint of the whole ruleset, so an incremental update can replace it."""
    return f'return comment "podseg state={fingerprint}"'


def split_sets(text: str) -> tuple[str, tuple[tuple[str, tuple[str, ...]], ...]]:
    """(skeleton, sets) of rendered table text: every `elements = {...}` block of a named set
    is cut out of the skeleton and returned as `("<family> <set>", elements)`, sorted.

    The same as the line-by-line `_split_sets_lines` (a randomised test compares them), but an
    element block, most of the text of a large ruleset, is cut with one `list.index` and one
    slice; text with any line break other than `\n` takes the line-by-line form."""
    if _odd_breaks(text):
        return _split_sets_lines(text)
    lines = text.split("\n")  # lines[-1] is what follows the final "\n" (usually "")
    last = len(lines) - 1
    skeleton: list[str] = []
    kept_last = -1
    sets: dict[str, tuple[str, ...]] = {}
    family = current = ""
    i = 0
    while i <= last:
        bare = lines[i]
        if bare == "    elements = {" and current:
            try:
                close = lines.index("    }", i + 1)
            except ValueError:  # never closed: the rest is elements that never make a set
                break
            sets[current] = tuple([line.strip().rstrip(",") for line in lines[i + 1 : close]])
            i = close + 1
            continue
        if bare.startswith("    "):
            pass  # a rule, set property or stray element line: changes nothing
        elif bare.startswith("table ") and (table := _TABLE_RE.match(bare)):
            family, current = table.group(1), ""
        elif bare.startswith("  set ") and (named := _SET_RE.match(bare)):
            current = f"{family} {named.group(1)}"
            sets[current] = ()
        else:
            current = ""
        skeleton.append(bare)
        kept_last = i
        i += 1
    joined = "\n".join(skeleton)
    if skeleton and kept_last < last:  # the last kept line had its line break
        joined += "\n"
    return joined, tuple(sorted(sets.items()))


# Line boundaries of str.splitlines other than "\n": text holding one is split line by line.
_OTHER_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_ASCII_BREAKS = ("\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e")


def _odd_breaks(text: str) -> bool:
    """Whether `text` holds a line break other than `\n` (substring tests run at C speed)."""
    if not text.isascii():
        return _OTHER_BREAKS.search(text) is not None
    return any(c in text for c in _ASCII_BREAKS)


def _split_sets_lines(text: str) -> tuple[str, tuple[tuple[str, tuple[str, ...]], ...]]:
    """`split_sets` one line at a time: the reference form (and the path for odd breaks)."""
    skeleton: list[str] = []
    sets: dict[str, tuple[str, ...]] = {}
    family = ""
    current = ""
    elements: list[str] | None = None
    for line in text.splitlines(keepends=True):
        bare = line.rstrip("\n")
        if elements is not None:
            if bare == "    }":
                sets[current] = tuple(elements)
                elements = None
            else:
                elements.append(bare.strip().rstrip(","))
            continue
        table = _TABLE_RE.match(bare)
        if table:
            family = table.group(1)
        named = _SET_RE.match(bare)
        if named:
            current = f"{family} {named.group(1)}"
            sets[current] = ()
        elif bare == "    elements = {" and current:
            elements = []
            continue
        elif not bare.startswith("    "):
            current = ""
        skeleton.append(line)
    return "".join(skeleton), tuple(sorted(sets.items()))


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
    first = r.first
    if r.family == 4 and 0 <= first <= _V4_MAX:  # dotted quads directly (tens of thousands)
        text = f"{first >> 24}.{first >> 16 & 255}.{first >> 8 & 255}.{first & 255}"
    else:
        text = str(ipaddress.ip_address(first) if r.family == 4 else ipaddress.IPv6Address(first))
    if first == r.last:
        return text
    bits = 32 if r.family == 4 else 128
    size = r.last - first + 1
    if size & (size - 1) == 0 and first % size == 0:
        return f"{text}/{bits - (size.bit_length() - 1)}"
    last = ipaddress.ip_address(r.last) if r.family == 4 else ipaddress.IPv6Address(r.last)
    return f"{text}-{last}"


_V4_MAX = (1 << 32) - 1


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
    quarantine, guard = rs.quarantine, rs.node_guard
    if not policy_rules and quarantine is None and guard is None:
        return out
    containment = _containment(rs, ifaces)
    out.extend(containment.sets)
    out.append(_chain("ipv6_link", [], list(_ICMPV6_LINK)))
    if ruleset.Direction.INGRESS in policy_rules or quarantine is not None:
        rules = ['iif "lo" accept']
        if quarantine is not None:
            rules.append("jump quarantine_ingress")  # before anything, established included
        if ruleset.Direction.INGRESS in policy_rules:
            rules += [
                f"ct state established,related ct mark & {_MARK} == 0x00000000 accept",
                "meta nfproto ipv6 jump ipv6_link",
                "jump ingress_policy",
                "jump ingress_deny",
            ]
        out.append(
            _chain("input", ["type filter hook input priority filter; policy accept;"], rules)
        )
        if ruleset.Direction.INGRESS in policy_rules:
            out.append(_chain("ingress_policy", [], policy_rules[ruleset.Direction.INGRESS]))
            out.append(
                _chain(
                    "ingress_deny",
                    [],
                    deny_rules(ruleset.Direction.INGRESS, "policy", ifaces, mode=rs.mode),
                )
            )
    if ruleset.Direction.EGRESS in policy_rules or quarantine is not None or guard is not None:
        rules = ['oif "lo" accept']
        if quarantine is not None:
            rules.append("jump quarantine_egress")
        # A conntrack entry carrying DENY_MARK (a denied flow, or a connection strict mode cut)
        # gets no shortcut: each of its packets is judged again.
        rules.append(f"ct state established,related ct mark & {_MARK} == 0x00000000 accept")
        if guard is not None:
            rules.append("jump node_guard")  # whatever the policies allow
        if ruleset.Direction.EGRESS in policy_rules:
            rules += ["meta nfproto ipv6 jump ipv6_link", "jump egress_policy", "jump egress_deny"]
        out.append(
            _chain("output", ["type filter hook output priority filter; policy accept;"], rules)
        )
        if ruleset.Direction.EGRESS in policy_rules:
            out.append(_chain("egress_policy", [], policy_rules[ruleset.Direction.EGRESS]))
            out.append(
                _chain(
                    "egress_deny",
                    [],
                    deny_rules(ruleset.Direction.EGRESS, "policy", ifaces, mode=rs.mode),
                )
            )
    out.extend(containment.chains)
    return _declare_counters(out)


def log_prefix(direction: ruleset.Direction, reason: str, mode: ruleset.PolicyMode) -> str:
    """The NFLOG prefix of a deny rule: `podseg <direction> <reason> <mode>`."""
    return f"{LOG_PREFIX} {direction.value} {_sanitize_token(reason)} {mode.value}"


def parse_log_prefix(prefix: str) -> tuple[str, str, str] | None:
    """(direction, reason, mode) of a prefix made by `log_prefix`; None when not ours."""
    parts = prefix.split(" ")
    if len(parts) != 4 or parts[0] != LOG_PREFIX:
        return None
    return parts[1], parts[2], parts[3]


def counter_name(direction: ruleset.Direction, reason: str, mode: ruleset.PolicyMode) -> str:
    """Name of the named counter of a deny rule: `deny.<direction>.<reason>.<mode>`."""
    return f"{COUNTER_PREFIX}.{direction.value}.{_sanitize_token(reason)}.{mode.value}"


def parse_counter_name(name: str) -> tuple[str, str, str] | None:
    """(direction, reason, mode) of a counter named by `counter_name`; None when not ours."""
    parts = name.split(".")
    if len(parts) != 4 or parts[0] != COUNTER_PREFIX:
        return None
    return parts[1], parts[2], parts[3]


def deny_rules(
    direction: ruleset.Direction,
    reason: str,
    ifaces: Sequence[str],
    *,
    mode: ruleset.PolicyMode = ruleset.PolicyMode.ENFORCE,
) -> list[str]:
    """The rule lines of a deny chain: every drop podseg renders comes from here.

    Each packet is logged to NFLOG (kernel rate limit, prefix naming direction, reason and
    mode) and counted in a named counter, then dropped. Egress keeps the silent-drop trick:
    decided here (the output hook) by setting DENY_MARK, dropped in the netdev egress hook of
    the pod's interface; `counter drop` here only when there is no such interface (fail
    closed). `visibility` mode logs and counts the same but accepts, and never sets
    DENY_MARK (a marked conntrack entry would drop the replies).
    """
    if reason not in DROP_REASONS:
        raise ValueError(f"unknown drop reason {reason!r}")
    log = (
        f'limit rate {LOG_RATE} log prefix "{log_prefix(direction, reason, mode)}" '
        f"group {NFLOG_GROUP} snaplen {LOG_SNAPLEN} queue-threshold {LOG_QUEUE_THRESHOLD}"
    )
    counter = f'counter name "{counter_name(direction, reason, mode)}"'
    if mode is ruleset.PolicyMode.VISIBILITY:
        return [log, f"{counter} accept"]
    if direction is ruleset.Direction.INGRESS or not ifaces:
        return [log, f"{counter} drop"]
    names = ", ".join(f'"{i}"' for i in ifaces)
    return [
        log,
        f"oifname != {{ {names} }} {counter} drop",
        f"{counter} meta mark set meta mark | {_MARK} ct mark set ct mark | {_MARK} accept",
    ]


_COUNTER_REF = re.compile(r'counter name "([^"]+)"')


def _declare_counters(body: list[str]) -> list[str]:
    """Prepend a declaration of every named counter the rules refer to."""
    names = sorted({m for part in body for m in _COUNTER_REF.findall(part)})
    return [f"  counter {name} {{\n  }}\n" for name in names] + body


def _sanitize_token(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text) or "_"


DROP_REASONS = ("policy", "quarantine", "node-guard")


def needs_netdev(rs: ruleset.PodRuleset) -> bool:
    """Whether an egress drop can happen, so the device egress hook must exist."""
    return rs.egress.isolated or rs.quarantine is not None or rs.node_guard is not None


@dataclasses.dataclass(frozen=True)
class _Containment:
    sets: list[str]
    chains: list[str]


def _addr_sets(
    prefix: str, ranges: Sequence[ruleset.AddrRange]
) -> tuple[list[str], list[tuple[str, str]]]:
    """Sets `<prefix>4`/`<prefix>6` of the non-empty families, and (family keyword, set name)."""
    sets: list[str] = []
    names: list[tuple[str, str]] = []
    for family, ip, addr_type in ((4, "ip", "ipv4_addr"), (6, "ip6", "ipv6_addr")):
        elements = [format_addr(r) for r in ranges if r.family == family]
        if elements:
            name = f"{prefix}{family}"
            sets.append(_set(name, addr_type, elements))
            names.append((ip, name))
    return sets, names


def _containment(rs: ruleset.PodRuleset, ifaces: Sequence[str]) -> _Containment:
    """Sets and chains of quarantine and the node guard (jumped from input/output)."""
    sets: list[str] = []
    chains: list[str] = []
    if rs.quarantine is not None:
        allow_sets, allowed = _addr_sets("quarantine_allow", rs.quarantine.allow_from)
        sets += allow_sets
        chains.append(
            _chain(
                "quarantine_ingress",
                [],
                [f"{ip} saddr @{name} accept" for ip, name in allowed]
                + ["meta nfproto ipv6 jump ipv6_link"]
                + deny_rules(ruleset.Direction.INGRESS, "quarantine", ifaces),
            )
        )
        chains.append(
            _chain(
                "quarantine_egress",
                [],
                [f"ct direction reply {ip} daddr @{name} accept" for ip, name in allowed]
                + ["meta nfproto ipv6 jump ipv6_link"]
                + deny_rules(ruleset.Direction.EGRESS, "quarantine", ifaces),
            )
        )
    guard = rs.node_guard
    if guard is not None:
        blocked_sets, blocked = _addr_sets("node_guard_blocked", guard.blocked)
        node_sets, nodes = _addr_sets("node_guard_nodes", guard.node_addrs)
        sets += blocked_sets + node_sets
        rules = [f"{ip} daddr @{name} jump node_guard_deny" for ip, name in blocked]
        if guard.ports and nodes:
            elements = [
                f"{format_protocol(p.protocol)} . {format_ports(p.ports)}" for p in guard.ports
            ]
            sets.append(_set("node_guard_ports", "inet_proto . inet_service", elements))
            rules += [
                f"{ip} daddr @{name} meta l4proto . th dport @node_guard_ports jump node_guard_deny"
                for ip, name in nodes
            ]
        chains.append(_chain("node_guard", [], rules))
        chains.append(
            _chain(
                "node_guard_deny", [], deny_rules(ruleset.Direction.EGRESS, "node-guard", ifaces)
            )
        )
    return _Containment(sets, chains)


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
    # Every set is declared even when empty, so that a change of peers alone never changes
    # the skeleton and stays an incremental element update.
    for family, ip, addr_type in ((4, "ip", "ipv4_addr"), (6, "ip6", "ipv6_addr")):
        elements = [format_addr(r) for r in d.any_port_peers if r.family == family]
        name = set_name(direction, "any", family)
        sets.append(_set(name, addr_type, elements))
        rules.append(f"{ip} {key} @{name} {verdict}")
    for family, ip, addr_type in ((4, "ip", "ipv4_addr"), (6, "ip6", "ipv6_addr")):
        elements = _port_elements(d.port_peers, family)
        name = set_name(direction, "ports", family)
        sets.append(_set(name, f"{addr_type} . inet_proto . inet_service", elements))
        rules.append(f"{ip} {key} . meta l4proto . th dport @{name} {verdict}")
    return sets, rules


def _port_elements(port_peers: Sequence[ruleset.PeerPort], family: int) -> list[str]:
    """`addr . proto . ports` texts of one family's elements: the address text is made once
    per address run (a run's elements are adjacent and share their AddrRange)."""
    out: list[str] = []
    addrs_before: ruleset.AddrRange | None = None
    addr_text = ""
    for e in port_peers:
        addrs = e.addrs
        if addrs.family != family:
            continue
        if addrs is not addrs_before:
            addrs_before, first = addrs, addrs.first
            if family == 4 and first == addrs.last and 0 <= first <= _V4_MAX:  # most peers
                addr_text = f"{first >> 24}.{first >> 16 & 255}.{first >> 8 & 255}.{first & 255}"
            else:
                addr_text = format_addr(addrs)
        ports = e.ports
        port_text = str(ports.first) if ports.first == ports.last else f"{ports.first}-{ports.last}"
        out.append(f"{addr_text} . {_PROTOCOL_NAMES.get(e.protocol) or e.protocol} . {port_text}")
    return out


def _set(name: str, type_: str, elements: Sequence[str]) -> str:
    if not elements:
        return f"  set {name} {{\n    type {type_}\n    flags interval\n  }}\n"
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
