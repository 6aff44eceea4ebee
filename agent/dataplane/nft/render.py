"""Render a `PodRuleset` into one atomic `nft -f` transaction for the pod's network namespace.

Pure text generation, so the exact kernel program is unit-testable and its fingerprint can be
compared with what a namespace already holds (skip the apply when equal). Layout, per owned
table (`table inet podseg`, plus `table netdev podseg` when egress is isolated):

    input  (hook)  : iif lo accept; established/related accept unless the conntrack entry
                     carries DENY_MARK; ICMPv6 link plumbing; jump ingress_policy;
                     jump ingress_deny
    ingress_policy : one rule per peer set: saddr in *_any{4,6}, or
                     saddr . l4proto . dport in *_exact{4,6} (hash: one address, one
                     port) -> goto ingress_allow; then one verdict map on l4proto . dport
                     jumping to a chain per port segment, whose rules look saddr up in the
                     address interval sets of the port specs covering it
                     (*_<proto>_<ports>_v{4,6}) -> goto ingress_allow
    ingress_allow  : a new connection is sampled to NFLOG (`podseg accept ingress`, rate
                     limited); accept
    ingress_deny   : counter drop
    output (hook)  : oif lo accept; established/related accept; ICMPv6 link plumbing;
                     jump egress_policy; jump egress_deny
    egress_policy  : the same with daddr, -> goto egress_allow
    egress_allow   : clear DENY_MARK on the conntrack entry; sample a new connection; accept
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

Incremental updates: the tables are built as data first (`Table`, `NamedSet`, `Chain`) and
the script is produced from them, so a rendered ruleset also has its *skeleton* (the tables'
text with every named set's elements left out) and its *sets* (qualified set name -> element
texts) straight from that structure. Every peer set of an isolated direction is always declared
(empty or not), so a change of peers alone keeps the skeleton and can be committed as element
deletes/adds (`agent.dataplane.nft.incremental`, or derived from the change of the
elements alone: `agent.dataplane.nft.fastpatch`, which finds its way by each peer set's
`members`). The table comment carries the skeleton's
fingerprint (`shape`, fixed for the table's life since any other change replaces the table); the
fingerprint of the whole ruleset lives in the one rule of the unhooked chain `state`
(`podseg state=<16 hex>`), replaced in the same transaction as the elements.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import itertools
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from agent.calc import intervals, memo, ruleset

TABLE = "podseg"
DENY_MARK = 0x00100000
FORMAT_VERSION = "podseg-nft/8"
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
# Allowed-flow sampling: a new connection that a direction's policy accepts is logged to the
# same group with prefix `podseg accept <direction>`, under a kernel rate limit of its own per
# direction, from one rule in the chain every accept of the direction goes to (constant cost).
ACCEPT_RATE = "20/second burst 20 packets"
ACCEPT_TOKEN = "accept"
COUNTER_PREFIX = "deny"

_MARK = f"0x{DENY_MARK:08x}"
_CLEAR_MARK = f"0x{0xFFFFFFFF & ~DENY_MARK:08x}"
_FP_RE = re.compile(r'comment "podseg state=([0-9a-f]{16})"')
STATE_CHAIN = "state"
_COMMENT_RE = re.compile(r'comment "(podseg fp=[0-9a-f]{16}[^"]*)"')
_BAD_IFNAME = re.compile(r'[\s/:"\\]|[^\x21-\x7e]')
_PROTOCOL_NAMES = {number: name.lower() for name, number in ruleset.PROTOCOL_NUMBERS.items()}
# Neighbour discovery (hop limit 255, RFC 4861) and MLD (hop limit 1, link-local or
# unspecified source, link-scope multicast destination, RFC 3810) pass an isolated direction
# only within the link: `nd_link6` holds the link-scope addresses (unspecified, link-local,
# all-nodes, all-routers, solicited-node multicast) and the pod's on-link routes.
_ND_LINK = ("::", "fe80::/10", "ff02::1", "ff02::2", "ff02::1:ff00:0/104")
_MLD = "ip6 hoplimit 1 ip6 saddr { ::, fe80::/10 } ip6 daddr ff02::/16 accept"
_ND_INGRESS = (
    "icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } "
    "ip6 hoplimit 255 ip6 saddr @nd_link6 accept",
    "icmpv6 type { mld-listener-query, mld-listener-report, mld-listener-done, "
    f"mld2-listener-report }} {_MLD}",
)
_ND_EGRESS = (
    "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } "
    "ip6 hoplimit 255 ip6 daddr @nd_link6 accept",
    f"icmpv6 type {{ mld-listener-report, mld-listener-done, mld2-listener-report }} {_MLD}",
)
# In quarantine, only what resolving the gateway needs: solicitations and advertisements with
# the gateway (`nd_gateway6`: its addresses and their solicited-node groups), and the gateway
# resolving the pod from its link-local address (a solicitation in, the advertisement out).
_ND_QUARANTINE_INGRESS = (
    "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 "
    "ip6 saddr @nd_gateway6 accept",
    "icmpv6 type nd-neighbor-solicit ip6 hoplimit 255 ip6 saddr fe80::/10 accept",
)
_ND_QUARANTINE_EGRESS = (
    "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 "
    "ip6 daddr @nd_gateway6 accept",
    "icmpv6 type nd-neighbor-advert ip6 hoplimit 255 ip6 daddr fe80::/10 accept",
)
SOLICITED_NODE = int(ipaddress.IPv6Address("ff02::1:ff00:0"))
# Anti-spoofing (netdev egress hook of each pod interface): the frame's EtherType must agree
# with the protocol the sending socket claims (an AF_PACKET socket may claim another), and
# only IPv4, IPv6 and ARP from the pod's own addresses leave; link-local (and unspecified)
# sources only for neighbour discovery and MLD; a neighbour advertisement only for the pod's
# own addresses (else it would redirect a neighbour's traffic, as a forged ARP reply would).
# The agreement is checked by rules of its own: written as a dependency in front of an address
# match (`meta protocol ip ether type ip ip saddr ...`), nft lists one of the two as implied,
# and a table restored from such a listing would no longer check it.
_ANTI_SPOOF = (
    *(
        f"{claimed} {proto} {framed} != {proto} jump anti_spoof_deny"
        for proto in ("ip", "ip6", "arp")
        for claimed, framed in (("meta protocol", "ether type"), ("ether type", "meta protocol"))
    ),
    "icmpv6 type nd-neighbor-advert @th,64,128 != @anti_spoof_targets6 jump anti_spoof_deny",
    "ip saddr @anti_spoof_own4 return",
    "ip6 saddr @anti_spoof_own6 return",
    "arp hlen 6 arp plen 4 arp saddr ip @anti_spoof_own4 return",
    "ip6 saddr @anti_spoof_local6 icmpv6 type { nd-router-solicit, "
    "nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 return",
    "ip6 saddr @anti_spoof_local6 icmpv6 type { mld-listener-report, "
    "mld-listener-done, mld2-listener-report } ip6 hoplimit 1 return",
    "jump anti_spoof_deny",
)


Member = ruleset.AddrRange | ruleset.PeerPort | ruleset.ProtoPorts


@dataclasses.dataclass(frozen=True, slots=True)
class NamedSet:
    """A named set: its `type` (or `typeof <expression>`) and `flags` and its elements, each
    as nft spells them."""

    name: str
    type: str
    flags: tuple[str, ...] = ("interval",)
    elements: tuple[str, ...] = ()
    # A peer or tier set's canonical elements, one per text above (`agent.dataplane.nft.
    # fastpatch` and `.tierpatch` find where a change goes by them); not part of the text.
    members: tuple[Member, ...] = dataclasses.field(default=(), compare=False, repr=False)
    # `elements_digest(elements)` when made beforehand (b"": made when needed); whoever
    # replaces the elements replaces it too.
    elements_digest: bytes = dataclasses.field(default=b"", compare=False, repr=False)


@dataclasses.dataclass(frozen=True, slots=True)
class Chain:
    """A chain: `header` statements (hook, priority, policy), then its rules, as nft text."""

    name: str
    header: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Table:
    """One table as data; `table_text` writes it as comment, named counters, sets, chains."""

    family: str
    name: str
    comment: str | None = None
    sets: tuple[NamedSet, ...] = ()
    counters: tuple[str, ...] = ()
    chains: tuple[Chain, ...] = ()


@dataclasses.dataclass(frozen=True)
class Rendered:
    """A rendered ruleset: the tables as data and the fingerprint it tags the table with.

    What is kept is what a next patch needs, not the script: `tables` (the structure, after
    the delete prelude; a set's element texts are shared with every pod of the same peers),
    `shape` (the fingerprint of the skeleton: everything but set elements), `digests` (one per
    fingerprinted piece, so a derived patch rehashes only the sets it changed:
    `agent.dataplane.nft.fastpatch`) and `interfaces` (canonical). `script` and `sets` are
    written from them on demand (a whole commit, the render-then-diff patch). `text` is a
    script given as is, with no structure (it never patches).
    """

    fingerprint: str
    shape: str = ""
    tables: tuple[Table, ...] = ()
    interfaces: tuple[str, ...] = ()  # canonical: the ones the tables were rendered for
    digests: tuple[bytes, ...] = dataclasses.field(default=(), repr=False)
    text: str | None = dataclasses.field(default=None, repr=False)

    @property
    def script(self) -> str:
        """The `nft -f` script that replaces podseg's tables with these."""
        return self.text if self.text is not None else script_text(self.tables)

    @property
    def sets(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """Each named set's elements as `("<family> <set>", (element, ...))`, sorted by name
        (`agent.dataplane.nft.incremental`)."""
        return tuple(
            sorted((f"{t.family} {s.name}", s.elements) for t in self.tables for s in t.sets)
        )


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
    inet = _inet_table(rs, ifaces)
    netdev = (_netdev_table(rs, ifaces),) if needs_netdev(rs) and ifaces else ()
    return assemble(rs, inet, netdev, ifaces)


def assemble(
    rs: ruleset.PodRuleset, inet: Table, netdev: Sequence[Table], ifaces: tuple[str, ...]
) -> Rendered:
    """The fingerprints of built tables: `inet` without its comment and `state` chain, as
    `_inet_table` builds it.

    The fingerprint hashes the digest of each piece of everything but the comment and the state
    chain, which carry the fingerprints (`piece_digests`: a set's digest covers its declaration
    and every element); the shape hashes the same text with no set elements."""
    digests = piece_digests(inet, netdev)
    fp = fingerprint_from(rs, digests)
    skeleton = table_text(inet, elements=False)
    skeleton += [piece for table in netdev for piece in table_text(table, elements=False)]
    shape = fingerprint_of(rs, ["shape", "".join(skeleton)])
    pod = _sanitize(f"{rs.namespace}/{rs.pod}")
    comment = f"podseg fp={shape} pod={pod}".encode()[:COMMENT_MAX_BYTES].decode(errors="ignore")
    state = Chain(STATE_CHAIN, rules=(state_rule(fp),))
    inet = Table(inet.family, inet.name, comment, inet.sets, inet.counters, (*inet.chains, state))
    return Rendered(fp, shape, (inet, *netdev), ifaces, digests)


def with_sets(old: Rendered, rs: ruleset.PodRuleset, patched: dict[str, NamedSet]) -> Rendered:
    """`old` (a rendering of a ruleset that differs from `rs` only in peer-set and tier-set
    elements, as `fastpatch.derive` checks) with the elements of its inet sets named in
    `patched` replaced: only those sets are hashed again, the fingerprint is a hash of the
    pieces' digests. The skeleton, so the shape and the comment, stay."""
    inet = old.tables[0]
    digests = list(old.digests)
    sets = list(inet.sets)
    first = len(inet.counters)
    for n, named in enumerate(inet.sets):
        new = patched.get(named.name)
        if new is not None:
            sets[n] = new
            digests[first + n] = set_digest(new)
    fp = fingerprint_from(rs, digests)
    state = Chain(STATE_CHAIN, rules=(state_rule(fp),))
    chains = (*inet.chains[:-1], state)
    table = Table(inet.family, inet.name, inet.comment, tuple(sets), inet.counters, chains)
    return Rendered(fp, old.shape, (table, *old.tables[1:]), old.interfaces, tuple(digests))


def piece_digests(inet: Table, netdev: Sequence[Table]) -> tuple[bytes, ...]:
    """The digest of each fingerprinted piece, in order: the counters, sets and chains of
    `inet` (no comment, no state chain), then every piece of the `netdev` tables."""
    out = [_sha(f"  counter {name} {{\n  }}\n") for name in inet.counters]
    out += [set_digest(s) for s in inet.sets]
    out += [_sha(_chain_text(c)) for c in inet.chains]
    out += [_sha(piece) for table in netdev for piece in table_text(table)]
    return tuple(out)


def set_digest(named: NamedSet) -> bytes:
    """The digest of a set's piece: its declaration and its elements (`elements_digest`; the
    peer sets carry theirs, made once per distinct peer tuple and shared by its pods)."""
    digest = hashlib.sha256(_set_head(named).encode())
    digest.update(b"\0")
    digest.update(named.elements_digest or elements_digest(named.elements))
    return digest.digest()


def elements_digest(elements: Sequence[str]) -> bytes:
    """The digest of a set's element texts (in order: canonical sets are sorted)."""
    return hashlib.sha256("\n".join(elements).encode()).digest()


def _sha(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def script_text(tables: Sequence[Table]) -> str:
    """The `nft -f` script that replaces podseg's tables with `tables`."""
    return "".join([*_delete_prelude(), *(piece for t in tables for piece in table_text(t))])


def table_text(table: Table, *, elements: bool = True) -> list[str]:
    """The text of `table` in pieces: opening line and comment, one piece per counter, set and
    chain, closing line. Without `elements`, every set is declared without its elements: the
    skeleton."""
    counters = [f"  counter {name} {{\n  }}\n" for name in table.counters]
    sets = [_set_text(s, elements=elements) for s in table.sets]
    chains = [_chain_text(c) for c in table.chains]
    return [*_table_open(table), *counters, *sets, *chains, "}\n"]


def _set_head(s: NamedSet) -> str:
    kind = s.type if s.type.startswith("typeof ") else f"type {s.type}"
    head = f"  set {s.name} {{\n    {kind}\n"
    if s.flags:
        head += f"    flags {', '.join(s.flags)}\n"
    return head


def _set_text(s: NamedSet, *, elements: bool) -> str:
    head = _set_head(s)
    if elements and s.elements:
        joined = ",\n      ".join(s.elements)
        head += f"    elements = {{\n      {joined}\n    }}\n"
    return head + "  }\n"


def _table_open(table: Table) -> list[str]:
    head = [f"table {table.family} {table.name} {{\n"]
    if table.comment is not None:
        head.append(f'  comment "{table.comment}"\n')
    return head


def _chain_text(chain: Chain) -> str:
    lines = [f"  chain {chain.name} {{\n"]
    lines.extend(f"    {h}\n" for h in chain.header)
    lines.extend(f"    {r}\n" for r in chain.rules)
    lines.append("  }\n")
    return "".join(lines)


def state_rule(fingerprint: str) -> str:
    """The one rule of chain `state`: never evaluated (no hook, no jump), it only carries the
    fingerprint of the whole ruleset, so an incremental update can replace it."""
    return f'return comment "podseg state={fingerprint}"'


def fingerprint_of(rs: ruleset.PodRuleset, content: Sequence[str]) -> str:
    """Hash of everything the table stands for: format version, identity, mode, policies and
    the rendered content (which covers every set element, rule and interface)."""
    return fingerprint_from(rs, [part.encode() for part in content])


def fingerprint_from(rs: ruleset.PodRuleset, content: Sequence[bytes]) -> str:
    """`fingerprint_of`, over content given as bytes (the pieces' digests, `piece_digests`)."""
    digest = hashlib.sha256()
    header = [
        FORMAT_VERSION,
        f"{rs.namespace}/{rs.pod}",
        str(rs.mode),
        "ingress=" + ",".join(rs.ingress.policies),
        "egress=" + ",".join(rs.egress.policies),
    ]
    for part in header:
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(b"\0".join(content))
    if content:
        digest.update(b"\0")
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def canonical_interfaces(interfaces: Sequence[str]) -> tuple[str, ...]:
    """Sorted, de-duplicated interface names; ValueError for an invalid name."""
    for name in interfaces:
        if not 1 <= len(name.encode()) <= 15 or name in {".", ".."} or _BAD_IFNAME.search(name):
            raise ValueError(f"invalid interface name {name!r}")
    return tuple(sorted(set(interfaces)))


def format_addr(r: ruleset.AddrRange) -> str:
    """An address range as nft text: `a`, `a/len` when it is exactly a prefix, else `a-b`.

    IPv4 addresses are written as dotted quads straight from their numbers: a node's pods
    render hundreds of thousands of them at start, and `ipaddress` costs several times more."""
    first, last = r.first, r.last
    v4 = r.family == 4 and 0 <= first <= last <= _V4_MAX
    if v4:
        text = f"{first >> 24}.{first >> 16 & 255}.{first >> 8 & 255}.{first & 255}"
    else:
        text = str(ipaddress.ip_address(first) if r.family == 4 else ipaddress.IPv6Address(first))
    if first == last:
        return text
    bits = 32 if r.family == 4 else 128
    size = last - first + 1
    if size & (size - 1) == 0 and first % size == 0:
        return f"{text}/{bits - (size.bit_length() - 1)}"
    if v4:
        return f"{text}-{last >> 24}.{last >> 16 & 255}.{last >> 8 & 255}.{last & 255}"
    end = ipaddress.ip_address(last) if r.family == 4 else ipaddress.IPv6Address(last)
    return f"{text}-{end}"


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


def log_prefix(direction: ruleset.Direction, reason: str, mode: ruleset.PolicyMode) -> str:
    """The NFLOG prefix of a deny rule: `podseg <direction> <reason> <mode>`."""
    return f"{LOG_PREFIX} {direction.value} {_sanitize_token(reason)} {mode.value}"


def accept_prefix(direction: ruleset.Direction) -> str:
    """The NFLOG prefix of an allowed-connection sample: `podseg accept <direction>`."""
    return f"{LOG_PREFIX} {ACCEPT_TOKEN} {direction.value}"


def parse_accept_prefix(prefix: str) -> str | None:
    """The direction of a prefix made by `accept_prefix`; None when it is no such prefix."""
    parts = prefix.split(" ")
    if len(parts) != 3 or parts[0] != LOG_PREFIX or parts[1] != ACCEPT_TOKEN:
        return None
    return parts[2] if parts[2] in _DIRECTIONS else None


def accept_log_rule(direction: ruleset.Direction) -> str:
    """The rule that samples accepted new connections of `direction` to NFLOG."""
    return (
        f'ct state new limit rate {ACCEPT_RATE} log prefix "{accept_prefix(direction)}" '
        f"group {NFLOG_GROUP} snaplen {LOG_SNAPLEN} queue-threshold {LOG_QUEUE_THRESHOLD}"
    )


def observes_default(rs: ruleset.PodRuleset) -> bool:
    """Visibility mode samples what a direction no policy isolates lets through, too: the
    connections that would need a policy once the namespace is enforced."""
    return rs.mode is ruleset.PolicyMode.VISIBILITY and rs.quarantine is None


def accept_chain(direction: ruleset.Direction) -> str:
    """The chain every accept of an isolated direction's policy goes to."""
    return f"{direction.value}_allow"


def parse_log_prefix(prefix: str) -> tuple[str, str, str] | None:
    """(direction, reason, mode) of a prefix made by `log_prefix`; None when not ours.

    Every part must be a word podseg writes: a pod can log to the same NFLOG group from inside
    its namespace with any prefix it likes, and these parts become metric label values, so
    anything else is refused (counted as malformed) rather than growing series."""
    parts = prefix.split(" ")
    if len(parts) != 4 or parts[0] != LOG_PREFIX:
        return None
    direction, reason, mode = parts[1:]
    if direction not in _DIRECTIONS or reason not in DROP_REASONS or mode not in _MODES:
        return None
    return direction, reason, mode


_DIRECTIONS = frozenset(d.value for d in ruleset.Direction)
_MODES = frozenset(m.value for m in ruleset.PolicyMode)


def counter_name(direction: ruleset.Direction, reason: str, mode: ruleset.PolicyMode) -> str:
    """Name of the named counter of a deny rule: `deny.<direction>.<reason>.<mode>`."""
    return f"{COUNTER_PREFIX}.{direction.value}.{_sanitize_token(reason)}.{mode.value}"


def parse_counter_name(name: str) -> tuple[str, str, str] | None:
    """(direction, reason, mode) of a counter named by `counter_name`; None when not ours."""
    parts = name.split(".")
    if len(parts) != 4 or parts[0] != COUNTER_PREFIX:
        return None
    direction, reason, mode = parts[1:]
    if direction not in _DIRECTIONS or reason not in DROP_REASONS or mode not in _MODES:
        return None  # not a counter podseg declares: never a metric label
    return direction, reason, mode


HIT_PREFIX = "hit"
_HIT_TOKEN = re.compile(r"[a-z0-9][a-z0-9.-]*/[a-z0-9][a-z0-9.-]*")
_HIT_NAME_MAX = 250  # the kernel keeps object names up to 255 bytes


def hit_counter_name(direction: ruleset.Direction, policy: str) -> str:
    """Name of the named counter of one policy's hits in one direction:
    `hit.<direction>.<namespace>/<name>`, or `hit.<direction>.~<hash>` for a key that is too
    long or not a plain Kubernetes name (`policy_token` gives the same token for a key)."""
    return f"{HIT_PREFIX}.{direction.value}.{policy_token(policy)}"


def policy_token(policy: str) -> str:
    """The policy part of a hit counter's name (see `hit_counter_name`)."""
    if _HIT_TOKEN.fullmatch(policy) and len(policy) <= _HIT_NAME_MAX - 12:
        return policy
    return "~" + hashlib.sha256(policy.encode()).hexdigest()[:FINGERPRINT_CHARS]


def parse_hit_counter_name(name: str) -> tuple[str, str] | None:
    """(direction, policy token) of a counter named by `hit_counter_name`; None when not
    ours. The token is only a claim: the caller maps it to a policy it knows (a pod may
    write anything into its own namespace)."""
    parts = name.split(".", 2)
    if len(parts) != 3 or parts[0] != HIT_PREFIX or parts[1] not in _DIRECTIONS:
        return None
    return parts[1], parts[2]


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


def _sanitize_token(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text) or "_"


DROP_REASONS = ("policy", "quarantine", "node-guard", "spoofed", "admin", "baseline")


def marks_egress(rs: ruleset.PodRuleset) -> bool:
    """Whether an egress deny can mark a packet for the device egress hook to drop."""
    return rs.egress.tiered or rs.quarantine is not None or rs.node_guard is not None


def needs_netdev(rs: ruleset.PodRuleset) -> bool:
    """Whether the device egress hook must exist: an egress drop can happen there (marked
    packets, or anti-spoofing)."""
    return marks_egress(rs) or rs.anti_spoof is not None


class _Body:
    """The sets, chains and named counters of a table while it is built; every deny chain
    comes from `deny`, so each counter a rule names is declared."""

    def __init__(self, ifaces: Sequence[str]) -> None:
        self.ifaces = ifaces
        self.sets: list[NamedSet] = []
        self.chains: list[Chain] = []
        self.counters: set[str] = set()

    def chain(self, name: str, rules: Sequence[str], header: Sequence[str] = ()) -> None:
        # Interned: the agent keeps every local pod's tables, and pods of the same policies
        # have the same rules (one string each, not one per pod).
        self.chains.append(Chain(name, tuple(header), tuple(map(sys.intern, rules))))

    def deny(
        self,
        direction: ruleset.Direction,
        reason: str,
        mode: ruleset.PolicyMode = ruleset.PolicyMode.ENFORCE,
    ) -> list[str]:
        self.counters.add(counter_name(direction, reason, mode))
        return deny_rules(direction, reason, self.ifaces, mode=mode)

    def table(self, family: str) -> Table:
        return Table(
            family,
            TABLE,
            sets=tuple(self.sets),
            counters=tuple(sorted(self.counters)),
            chains=tuple(self.chains),
        )


def _inet_table(rs: ruleset.PodRuleset, ifaces: Sequence[str]) -> Table:
    """`table inet podseg` without its comment and `state` chain (they carry fingerprints)."""
    body = _Body(ifaces)
    ingress = _direction(body, ruleset.Direction.INGRESS, rs.ingress)
    egress = _direction(body, ruleset.Direction.EGRESS, rs.egress)
    tiered = _tiers(body, ruleset.Direction.INGRESS, rs.ingress, rs.mode)
    tiered |= _tiers(body, ruleset.Direction.EGRESS, rs.egress, rs.mode)
    quarantine, guard = rs.quarantine, rs.node_guard
    observed = observes_default(rs)
    if not (ingress or egress or tiered or observed) and quarantine is None and guard is None:
        return body.table("inet")
    containment: list[Chain] = []
    if quarantine is not None:
        containment += _quarantine(body, quarantine, rs.link)
    if guard is not None:
        containment += _node_guard(body, guard)
    if ingress is not None or egress is not None or tiered:
        body.sets.append(NamedSet("nd_link6", "ipv6_addr", elements=_nd_link(rs.link)))
        body.chain("nd_ingress", _ND_INGRESS)
        body.chain("nd_egress", _ND_EGRESS)
    if ingress is not None or quarantine is not None or rs.ingress.tiered or observed:
        _input_chains(body, rs, ingress)
    contained = quarantine is not None or guard is not None
    if egress is not None or contained or rs.egress.tiered or observed:
        _output_chains(body, rs, egress)
    body.chains += containment
    return body.table("inet")


def _input_chains(body: _Body, rs: ruleset.PodRuleset, policy: list[str] | None) -> None:
    """The input hook and, when ingress is isolated, its policy and deny chains."""
    rules = ['iif "lo" accept']
    if rs.quarantine is not None:
        rules.append("jump quarantine_ingress")  # before anything, established included
    if rs.ingress.tiered:
        rules += [
            f"ct state established,related ct mark & {_MARK} == 0x00000000 accept",
            "meta nfproto ipv6 jump nd_ingress",
            *_tier_jumps(ruleset.Direction.INGRESS, rs.ingress),
        ]
    if observes_default(rs) and not rs.ingress.isolated:
        rules.append(accept_log_rule(ruleset.Direction.INGRESS))  # what the default lets in
    body.chain("input", rules, ["type filter hook input priority filter; policy accept;"])
    if policy is not None:
        body.chain("ingress_policy", policy)
        body.chain("ingress_deny", body.deny(ruleset.Direction.INGRESS, "policy", rs.mode))


def _output_chains(body: _Body, rs: ruleset.PodRuleset, policy: list[str] | None) -> None:
    """The output hook and, when egress is isolated, its policy and deny chains."""
    rules = ['oif "lo" accept']
    if rs.quarantine is not None:
        rules.append("jump quarantine_egress")
    # A conntrack entry carrying DENY_MARK (a denied flow, or a connection strict mode cut)
    # gets no shortcut: each of its packets is judged again.
    rules.append(f"ct state established,related ct mark & {_MARK} == 0x00000000 accept")
    if rs.node_guard is not None:
        rules.append("jump node_guard")  # whatever the policies allow
    if rs.egress.tiered:
        rules += [
            "meta nfproto ipv6 jump nd_egress",
            *_tier_jumps(ruleset.Direction.EGRESS, rs.egress),
        ]
    if observes_default(rs) and not rs.egress.isolated:
        rules.append(accept_log_rule(ruleset.Direction.EGRESS))
    body.chain("output", rules, ["type filter hook output priority filter; policy accept;"])
    if policy is not None:
        body.chain("egress_policy", policy)
        body.chain("egress_deny", body.deny(ruleset.Direction.EGRESS, "policy", rs.mode))


def _tier_jumps(direction: ruleset.Direction, d: ruleset.DirectionRuleset) -> list[str]:
    """The precedence of one direction: the Admin tier (Accept and Deny final, Pass and no
    match go on), NetworkPolicy when it isolates the direction (final), else the Baseline
    tier, else the hook's policy: accept."""
    name = direction.value
    rules = [f"jump {name}_admin"] if d.admin else []
    if d.isolated:
        return [*rules, f"jump {name}_policy", f"jump {name}_deny"]
    return [*rules, f"jump {name}_baseline"] if d.baseline else rules


def _tiers(
    body: _Body, direction: ruleset.Direction, d: ruleset.DirectionRuleset, mode: ruleset.PolicyMode
) -> bool:
    """Declare the chains and sets of a direction's admin tiers; whether it has any.

    One chain per tier (`<direction>_admin`, `<direction>_baseline`); per entry, in
    precedence order, two sets of (peer . protocol . port) and two of peers for the protocols
    without ports, each looked up by one rule: the first rule that holds a packet decides, and a
    packet costs at most one lookup per rule of the tiers, whatever the peers. Accept is final,
    Deny goes to the tier's deny chain (logged and counted under the tier's name), Pass returns
    to the hook, which goes on to the next tier."""
    found = False
    for tier, entries in (("admin", d.admin), ("baseline", d.baseline)):
        if not entries:
            continue
        found = True
        chain = f"{direction.value}_{tier}"
        rules: list[str] = []
        for n, entry in enumerate(entries):
            rules += tier_entry(body, direction, tier, n, entry)
        body.chain(chain, rules)
        body.chain(f"{chain}_deny", body.deny(direction, tier, mode))
    return found


def tier_entry(
    body: _Body, direction: ruleset.Direction, tier: str, n: int, entry: ruleset.TierEntry
) -> list[str]:
    """Declare the sets of entry `n` of a tier (`admin`, `baseline`) in `body`; its rules
    (`agent.dataplane.nft.tierpatch` renders a changed entry alone)."""
    key = "saddr" if direction is ruleset.Direction.INGRESS else "daddr"
    chain = f"{direction.value}_{tier}"
    if entry.action is ruleset.TierAction.DENY:
        verdict = f"jump {chain}_deny"
    elif entry.action is ruleset.TierAction.PASS:
        verdict = "return"
    elif direction is ruleset.Direction.INGRESS:
        verdict = "accept"
    else:
        verdict = f"ct mark set ct mark & {_CLEAR_MARK} accept"
    if entry.addrs is not None:
        return _factored_entry(body, f"{chain}{n}", key, entry, verdict)
    rules: list[str] = []
    ported = [e for e in entry.elements if e.protocol != ruleset.OTHER_PROTOCOL]
    other = intervals.merge_addrs(
        e.addrs for e in entry.elements if e.protocol == ruleset.OTHER_PROTOCOL
    )
    for family, ip, addr_type in ((4, "ip", "ipv4_addr"), (6, "ip6", "ipv6_addr")):
        name = f"{chain}{n}_ports{family}"
        body.sets.append(
            NamedSet(
                name,
                f"{addr_type} . inet_proto . inet_service",
                elements=tuple(port_elements(ported, family)),
                members=tuple(e for e in ported if e.addrs.family == family),
            )
        )
        rules.append(f"{ip} {key} . meta l4proto . th dport @{name} {verdict}")
    for family, ip, addr_type in ((4, "ip", "ipv4_addr"), (6, "ip6", "ipv6_addr")):
        name = f"{chain}{n}_other{family}"
        # `addr . nf_proto`: see `_addr_texts`
        elements, members = _addr_texts(other)[family]
        body.sets.append(
            NamedSet(name, f"{addr_type} . nf_proto", elements=elements, members=members)
        )
        rules.append(
            f"meta l4proto != {{ tcp, udp, sctp }} {ip} {key} . meta nfproto @{name} {verdict}"
        )
    return rules


def _factored_entry(
    body: _Body, prefix: str, key: str, entry: ruleset.TierEntry, verdict: str
) -> list[str]:
    """A tier entry whose region is a product (`ruleset.TierEntry.addrs`): its addresses
    (`<prefix>_a4`, `_a6`) and its protocols and ports (`<prefix>_p`) in separate sets, looked
    up together by one rule per family, and the addresses once more (`_other4`, `_other6`,
    empty unless the entry covers the protocols without ports) for those protocols. An edit
    of the rule's ports patches a few elements of `_p`; a peer that comes or goes, one
    address."""
    assert entry.addrs is not None
    ports = f"{prefix}_p"
    services = tuple(p for p in entry.ports if p.protocol != ruleset.OTHER_PROTOCOL)
    body.sets.append(
        NamedSet(
            ports,
            "inet_proto . inet_service",
            elements=tuple(
                f"{format_protocol(p.protocol)} . {format_ports(p.ports)}" for p in services
            ),
            members=services,
        )
    )
    other = any(p.protocol == ruleset.OTHER_PROTOCOL for p in entry.ports)
    texts = _addr_texts(entry.addrs)
    rules: list[str] = []
    for family, ip, addr_type in ((4, "ip", "ipv4_addr"), (6, "ip6", "ipv6_addr")):
        name = f"{prefix}_a{family}"
        elements, members = texts[family]
        body.sets.append(
            NamedSet(name, f"{addr_type} . nf_proto", elements=elements, members=members)
        )
        rules.append(
            f"{ip} {key} . meta nfproto @{name} meta l4proto . th dport @{ports} {verdict}"
        )
    for family, ip, addr_type in ((4, "ip", "ipv4_addr"), (6, "ip6", "ipv6_addr")):
        name = f"{prefix}_other{family}"
        elements, members = texts[family] if other else ((), ())
        body.sets.append(
            NamedSet(name, f"{addr_type} . nf_proto", elements=elements, members=members)
        )
        rules.append(
            f"meta l4proto != {{ tcp, udp, sctp }} {ip} {key} . meta nfproto @{name} {verdict}"
        )
    return rules


# The texts of the last few tier regions' addresses, by identity: the pods an admin rule
# applies to share its region (`agent.tiers.resolve`), so a pass that renders a hundred of them
# formats its thousand addresses once.
_AddrTexts = dict[int, tuple[tuple[str, ...], tuple[ruleset.AddrRange, ...]]]
_ADDR_TEXTS: memo.ByIdentity[_AddrTexts] = memo.ByIdentity(256)


def _addr_texts(addrs: tuple[ruleset.AddrRange, ...]) -> _AddrTexts:
    """`addrs` as elements of a `<family>_addr . nf_proto` set, per family (4, 6): the texts
    and the ranges they spell (a set's `members`, for the tier patch,
    `agent.dataplane.nft.tierpatch`).

    Why the constant `meta nfproto` in the key: before any element command, libnftables
    (1.0.6) fetches the elements of every plain interval set of the table into its cache, but
    not those of concatenated ones; with three 1,000-address sets in a pod's table, a 2-element
    patch cost 4.2 ms that way against 0.14 ms."""

    def make() -> _AddrTexts:
        made: _AddrTexts = {}
        for f in (4, 6):
            members = tuple(r for r in addrs if r.family == f)
            made[f] = (tuple(f"{format_addr(r)} . ipv{f}" for r in members), members)
        return made

    return _cached(_ADDR_TEXTS, addrs, make)


def _addr_sets(
    prefix: str, ranges: Sequence[ruleset.AddrRange]
) -> tuple[list[NamedSet], list[tuple[str, str]]]:
    """Sets `<prefix>4`/`<prefix>6` of the non-empty families, and (family keyword, set name)."""
    sets: list[NamedSet] = []
    names: list[tuple[str, str]] = []
    for family, ip, addr_type in ((4, "ip", "ipv4_addr"), (6, "ip6", "ipv6_addr")):
        elements = tuple([format_addr(r) for r in ranges if r.family == family])
        if elements:
            name = f"{prefix}{family}"
            sets.append(NamedSet(name, addr_type, elements=elements))
            names.append((ip, name))
    return sets, names


def _quarantine(body: _Body, quarantine: ruleset.Quarantine, link: ruleset.Link) -> list[Chain]:
    """The allow sets of quarantine, and its chains (jumped first from input and output)."""
    allow_sets, allowed = _addr_sets("quarantine_allow", quarantine.allow_from)
    body.sets += allow_sets
    body.sets.append(NamedSet("nd_gateway6", "ipv6_addr", elements=_nd_gateway(link)))
    ingress = [f"{ip} saddr @{name} accept" for ip, name in allowed]
    ingress += ["meta nfproto ipv6 jump nd_quarantine_ingress"]
    ingress += body.deny(ruleset.Direction.INGRESS, "quarantine")
    egress = [f"ct direction reply {ip} daddr @{name} accept" for ip, name in allowed]
    egress += ["meta nfproto ipv6 jump nd_quarantine_egress"]
    egress += body.deny(ruleset.Direction.EGRESS, "quarantine")
    return [
        Chain("quarantine_ingress", rules=tuple(ingress)),
        Chain("quarantine_egress", rules=tuple(egress)),
        Chain("nd_quarantine_ingress", rules=_ND_QUARANTINE_INGRESS),
        Chain("nd_quarantine_egress", rules=_ND_QUARANTINE_EGRESS),
    ]


def _v6(text: str) -> ruleset.AddrRange:
    network = ipaddress.IPv6Network(text)
    return ruleset.AddrRange(6, int(network.network_address), int(network.broadcast_address))


def nd_link_addresses(link: ruleset.Link) -> tuple[ruleset.AddrRange, ...]:
    """What `nd_link6` holds: link-scope addresses and the pod's on-link IPv6 routes."""
    ranges = [_v6(text) for text in _ND_LINK] + [r for r in link.onlink if r.family == 6]
    return intervals.merge_addrs(ranges)


def _nd_link(link: ruleset.Link) -> tuple[str, ...]:
    return tuple(format_addr(r) for r in nd_link_addresses(link))


def gateway_addresses(link: ruleset.Link) -> tuple[ruleset.AddrRange, ...]:
    """The pod's IPv6 gateways (link-local ones too) and their solicited-node groups."""
    gateways = [r for r in link.gateways if r.family == 6] + [r for _, r in link.scoped_gateways]
    groups = [
        _v6(f"{ipaddress.IPv6Address(SOLICITED_NODE | r.first & 0xFFFFFF)}/128")
        for r in gateways
        if r.first == r.last
    ]
    return intervals.merge_addrs(gateways + groups)


def _nd_gateway(link: ruleset.Link) -> tuple[str, ...]:
    return tuple(format_addr(r) for r in gateway_addresses(link))


def _node_guard(body: _Body, guard: ruleset.NodeGuard) -> list[Chain]:
    """The sets of the node guard, and its chains (jumped from output)."""
    blocked_sets, blocked = _addr_sets("node_guard_blocked", guard.blocked)
    node_sets, nodes = _addr_sets("node_guard_nodes", guard.node_addrs)
    body.sets += blocked_sets + node_sets
    rules = [f"{ip} daddr @{name} jump node_guard_deny" for ip, name in blocked]
    if guard.ports and (nodes or guard.scoped):
        elements = tuple(
            [f"{format_protocol(p.protocol)} . {format_ports(p.ports)}" for p in guard.ports]
        )
        body.sets.append(
            NamedSet("node_guard_ports", "inet_proto . inet_service", elements=elements)
        )
        ports = "meta l4proto . th dport @node_guard_ports jump node_guard_deny"
        rules += [f"{ip} daddr @{name} {ports}" for ip, name in nodes]
        if guard.scoped:
            # A link-local gateway is an address of its link only: guarded on its interface.
            scoped = tuple(f'"{iface}" . {format_addr(r)}' for iface, r in guard.scoped)
            body.sets.append(
                NamedSet("node_guard_scoped6", "ifname . ipv6_addr", (), elements=scoped)
            )
            rules.append(f"oifname . ip6 daddr @node_guard_scoped6 {ports}")
    deny = body.deny(ruleset.Direction.EGRESS, "node-guard")
    return [Chain("node_guard", rules=tuple(rules)), Chain("node_guard_deny", rules=tuple(deny))]


def _direction(
    body: _Body, direction: ruleset.Direction, d: ruleset.DirectionRuleset
) -> list[str] | None:
    """Declare the peer sets of a direction; its accept rules, or None when not isolated."""
    if not d.isolated:
        return None
    key = "saddr" if direction is ruleset.Direction.INGRESS else "daddr"
    allow = [accept_log_rule(direction)]
    if direction is ruleset.Direction.EGRESS:
        allow.insert(0, f"ct mark set ct mark & {_CLEAR_MARK}")
    body.chain(accept_chain(direction), [*allow, "accept"])
    verdict = f"goto {accept_chain(direction)}"
    rules: list[str] = []
    if d.per_policy:
        hits = f"{direction.value}_hits"
        hit_rules: list[str] = []
        for n, peers in enumerate(d.per_policy):
            counter = hit_counter_name(direction, peers.policy)
            body.counters.add(counter)
            action = f'counter name "{counter}"'
            prefix = f"{direction.value}_p{n}_"
            hit_rules += _peer_rules(
                body, key, action, prefix, peers.any_port_peers, peers.port_peers
            )
        body.chain(hits, hit_rules)
        rules.append(f"jump {hits}")  # counts only: every rule there falls through
    prefix = f"{direction.value}_"
    return rules + _peer_rules(body, key, verdict, prefix, d.any_port_peers, d.port_peers)


def _peer_rules(
    body: _Body,
    key: str,
    action: str,
    prefix: str,
    any_port_peers: Sequence[ruleset.AddrRange],
    port_peers: Sequence[ruleset.PeerPort],
) -> list[str]:
    """Declare the peer sets of `prefix`; the rules doing `action` for a packet they hold.

    `<prefix>any{4,6}`: addresses allowed on any port (address interval sets).
    `<prefix>exact{4,6}`: port elements of one address and one port (a pod IP and a port: most
    peers), as `addr . proto . port` in a plain hash set.
    Every other port element (an address range, or a port range) goes to the address interval
    set of its port spec, `<prefix><proto>_<ports>_v{4,6}` (`port_spec_set`), reached through
    one verdict map on `meta l4proto . th dport` (`port_spec_chains`). Why not one
    `addr . proto . port` interval set: the kernel keeps such a concatenation in a pipapo set,
    whose lookup tables it rebuilds on every transaction that changes it, in time growing with
    the set (5.5 ms at 1,000 elements, 40 ms at 6,100), while a plain address interval set
    (rbtree) changes in a fraction of a millisecond and a hash set in constant time.

    The sets of a port spec exist for every spec of `port_peers` (exact elements' included,
    so a peer whose address run grows or shrinks keeps the skeleton) and the `any` and `exact`
    sets always: a change of peers alone keeps the skeleton, and stays an element update,
    unless it brings the first element of a new (protocol, ports) or takes the last of one.
    Per packet: one lookup per `any`/`exact` set, the map, and one per port spec covering the
    packet's port (usually one): constant in the number of peers."""
    rules: list[str] = []
    any_sets = _any_elements(any_port_peers)
    for family, ip, addr_type in ((4, "ip", "ipv4_addr"), (6, "ip6", "ipv6_addr")):
        members, elements, digest = any_sets[family]
        name = f"{prefix}any{family}"
        body.sets.append(NamedSet(name, addr_type, ("interval",), elements, members, digest))
        rules.append(f"{ip} {key} @{name} {action}")
    found = _port_elements_of(port_peers)
    for family, ip, addr_type in ((4, "ip", "ipv4_addr"), (6, "ip6", "ipv6_addr")):
        held, elements, digest = found.exact[family]
        name = f"{prefix}exact{family}"
        set_type = f"{addr_type} . inet_proto . inet_service"
        body.sets.append(NamedSet(name, set_type, (), elements, held, digest))
        rules.append(f"{ip} {key} . meta l4proto . th dport @{name} {action}")
    vmap = _port_spec_rules(body, key, action, prefix, found.specs)
    return rules + vmap


# Per family: the members of a set, their texts and the texts' `elements_digest`.
_Elements = dict[int, tuple[tuple[Any, ...], tuple[str, ...], bytes]]


def _held(members: tuple[Any, ...], texts: tuple[str, ...]) -> tuple[Any, ...]:
    return members, texts, elements_digest(texts)


@dataclasses.dataclass(frozen=True, slots=True)
class _PortElements:
    """A canonical tuple of port elements sorted into the sets `_peer_rules` declares: the
    `exact` ones per family, and per port spec (in order) its address-set members per family."""

    exact: _Elements
    specs: tuple[tuple[Spec, _Elements], ...]


# The sorted and formatted elements of the last few peer tuples, by identity: the local pods
# whose policies resolve to the same peers share the very same tuples (`agent.calc`), so a
# pass that renders a hundred of them formats their thousands of addresses once.
_ANY_CACHE: memo.ByIdentity[_Elements] = memo.ByIdentity(64)
_PORT_CACHE: memo.ByIdentity[_PortElements] = memo.ByIdentity(64)
_T = TypeVar("_T")


def _cached(cache: memo.ByIdentity[_T], key: Sequence[Any], make: Callable[[], _T]) -> _T:
    """`make()`, or what it gave for the very same `key` object while that is still cached.
    Only a tuple is a key: it cannot change while cached."""
    if not isinstance(key, tuple):
        return make()
    return cache.get((), (key,), make)


def clear_caches() -> None:
    """Forget every kept text (tests: a rendering with nothing kept)."""
    _ADDR_TEXTS.clear()
    _ANY_CACHE.clear()
    _PORT_CACHE.clear()


def _any_elements(any_port_peers: Sequence[ruleset.AddrRange]) -> _Elements:
    def make() -> _Elements:
        out: _Elements = {}
        for family in (4, 6):
            members = tuple([r for r in any_port_peers if r.family == family])
            out[family] = _held(members, tuple([format_addr(r) for r in members]))
        return out

    return _cached(_ANY_CACHE, any_port_peers, make)


def _port_elements_of(port_peers: Sequence[ruleset.PeerPort]) -> _PortElements:
    def make() -> _PortElements:
        exact = tuple([e for e in port_peers if is_exact(e)])
        exact_sets: _Elements = {}
        for family in (4, 6):
            held = tuple([e for e in exact if e.addrs.family == family])
            exact_sets[family] = _held(held, tuple(port_elements(exact, family)))
        by_spec: dict[Spec, tuple[list[ruleset.PeerPort], list[ruleset.PeerPort]]] = {}
        for e in port_peers:
            spec = (e.protocol, e.ports.first, e.ports.last)
            held_by = by_spec.get(spec)
            if held_by is None:
                held_by = by_spec[spec] = ([], [])
            if not is_exact(e):
                held_by[0 if e.addrs.family == 4 else 1].append(e)
        specs = tuple(
            (
                spec,
                {
                    family: _held(tuple(held), tuple([format_addr(e.addrs) for e in held]))
                    for family, held in ((4, by_spec[spec][0]), (6, by_spec[spec][1]))
                },
            )
            for spec in sorted(by_spec)
        )
        return _PortElements(exact_sets, specs)

    return _cached(_PORT_CACHE, port_peers, make)


Spec = tuple[int, int, int]  # (protocol, first port, last port) of port elements


def port_spec_set(prefix: str, spec: Spec, family: int) -> str:
    """The address set of one port spec: `<prefix>tcp_8080_v4`, `<prefix>udp_1000_2000_v6`."""
    proto, first, last = spec
    ports = str(first) if first == last else f"{first}_{last}"
    return f"{prefix}{format_protocol(proto)}_{ports}_v{family}"


# The names `_peer_rules` gives the peer sets of a direction (`<direction>_`) and of each of
# its policies (`<direction>_p<N>_`): `any{4,6}`, `exact{4,6}` and the port specs' sets
# (`port_spec_set`). Elements there only ever allow (or count): without them a packet is
# denied, never let through, so a first commit may fill them after the rest
# (`agent.dataplane.nft.firstfill`). The tiers' sets (`<direction>_admin<N>_...`, some of
# them deny) never match.
_PEER_SET = re.compile(
    r"(?:ingress|egress)_(?:p[0-9]+_)?"
    r"(?:any[46]|exact[46]|(?:" + "|".join(sorted(_PROTOCOL_NAMES.values())) + r"|[0-9]+)"
    r"_[0-9]+(?:_[0-9]+)?_v[46])"
)


def is_peer_set(name: str) -> bool:
    """Whether `name` is the name of a peer set (its elements only allow: `_PEER_SET`)."""
    return _PEER_SET.fullmatch(name) is not None


def port_spec_chains(
    prefix: str, specs: Sequence[Spec]
) -> list[tuple[str, list[Spec], tuple[Spec, ...]]]:
    """(chain, its (protocol, port range) segments in the verdict map, the specs it checks).

    The map's keys must not overlap, while two specs' port ranges may (one address run
    allowed 80-90, another 85-95): the ports are cut into segments on which the set of
    covering specs is constant, and each distinct set of covering specs gets one chain that
    checks the address sets of those specs, named after its first segment. Disjoint specs (the
    usual case) give one chain and one segment each. A function of the specs alone, so of the
    skeleton."""
    by_proto: dict[int, list[Spec]] = {}
    for spec in specs:
        by_proto.setdefault(spec[0], []).append(spec)
    chains: dict[tuple[Spec, ...], list[Spec]] = {}
    for proto in sorted(by_proto):
        own = by_proto[proto]
        cuts = sorted({p for _, first, last in own for p in (first, last + 1)})
        for low, high in itertools.pairwise(cuts):
            covering = tuple(s for s in own if s[1] <= low and high - 1 <= s[2])
            if not covering:
                continue
            segments = chains.setdefault(covering, [])
            if segments and segments[-1][0] == proto and segments[-1][2] + 1 == low:
                segments[-1] = (proto, segments[-1][1], high - 1)  # the same chain: one key
            else:
                segments.append((proto, low, high - 1))
    out = []
    for covering, segments in chains.items():
        proto, first, last = segments[0]  # segments are disjoint: a unique name
        ports = str(first) if first == last else f"{first}_{last}"
        name = f"{prefix}by_{format_protocol(proto)}_{ports}"
        out.append((name, segments, covering))
    return out


def _port_spec_rules(
    body: _Body,
    key: str,
    action: str,
    prefix: str,
    by_spec: tuple[tuple[Spec, _Elements], ...],
) -> list[str]:
    """Declare the address sets of each port spec (`_PortElements.specs`) and the chains of
    its port segments; the verdict map rule (none when there is no port element)."""
    if not by_spec:
        return []
    specs = [spec for spec, _ in by_spec]
    for spec, sets in by_spec:
        for family, addr_type in ((4, "ipv4_addr"), (6, "ipv6_addr")):
            held, texts, digest = sets[family]
            name = port_spec_set(prefix, spec, family)
            body.sets.append(NamedSet(name, addr_type, ("interval",), texts, held, digest))
    verdicts: list[str] = []
    for chain, segments, covering in port_spec_chains(prefix, specs):
        body.chain(
            chain,
            [
                f"{ip} {key} @{port_spec_set(prefix, spec, family)} {action}"
                for spec in covering
                for family, ip in ((4, "ip"), (6, "ip6"))
            ],
        )
        verdicts += [
            f"{format_protocol(proto)} . {_port_text(first, last)} : jump {chain}"
            for proto, first, last in segments
        ]
    return [f"meta l4proto . th dport vmap {{ {', '.join(verdicts)} }}"]


def _port_text(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def is_exact(e: ruleset.PeerPort) -> bool:
    """A port element of one address and one port: it goes to the `exact` (hash) set."""
    return e.addrs.first == e.addrs.last and e.ports.first == e.ports.last


def port_elements(port_peers: Sequence[ruleset.PeerPort], family: int) -> list[str]:
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


def _netdev_table(rs: ruleset.PodRuleset, ifaces: Sequence[str]) -> Table:
    """`table netdev podseg`: on each interface, an egress hook drops what DENY_MARK marks,
    then checks the source addresses (anti-spoofing: every frame leaving the interface passes
    here, raw and packet sockets included)."""
    body = _Body(())  # a deny here is the device's own drop: no mark
    hook: list[str] = []
    if marks_egress(rs):
        hook.append(f"meta mark & {_MARK} == {_MARK} counter drop")
    if rs.anti_spoof is not None:
        hook.append("jump anti_spoof")
        _anti_spoof(body, rs.anti_spoof)
    chains = tuple(
        Chain(
            chain,
            (f'type filter hook egress device "{iface}" priority filter; policy accept;',),
            tuple(hook),
        )
        for chain, iface in interface_chains(ifaces)
    )
    return Table(
        "netdev",
        TABLE,
        sets=tuple(body.sets),
        counters=tuple(sorted(body.counters)),
        chains=chains + tuple(body.chains),
    )


def _anti_spoof(body: _Body, spoof: ruleset.AntiSpoof) -> None:
    """The sets (always all declared: a change of addresses stays an element patch) and the
    chains of anti-spoofing."""
    own4 = [format_addr(r) for r in spoof.own if r.family == 4]
    own6 = [r for r in spoof.own if r.family == 6]
    local6 = intervals.merge_addrs([_v6("::/128"), *spoof.link_local])
    targets = intervals.merge_addrs([*own6, *spoof.link_local])
    body.sets += [
        NamedSet("anti_spoof_own4", "ipv4_addr", elements=tuple(own4)),
        NamedSet("anti_spoof_own6", "ipv6_addr", elements=tuple(format_addr(r) for r in own6)),
        NamedSet("anti_spoof_local6", "ipv6_addr", elements=tuple(map(format_addr, local6))),
        NamedSet(
            "anti_spoof_targets6",
            "typeof @th,64,128",
            elements=tuple(_raw128(r) for r in targets),
        ),
    ]
    body.chain("anti_spoof", _ANTI_SPOOF)
    body.chain("anti_spoof_deny", body.deny(ruleset.Direction.EGRESS, "spoofed"))


def _raw128(r: ruleset.AddrRange) -> str:
    """An IPv6 range as the integers a raw 128-bit payload set holds."""
    if r.first == r.last:
        return f"0x{r.first:032x}"
    return f"0x{r.first:032x}-0x{r.last:032x}"


def netdev_table(rs: ruleset.PodRuleset, ifaces: Sequence[str]) -> list[str]:
    """The `table netdev podseg` of `rs` alone, as `table_text` pieces (the iptables backend
    reuses it: marked packets are dropped, and sources checked, in each interface's egress
    hook); none when it needs none."""
    ifaces = canonical_interfaces(ifaces)
    if not (needs_netdev(rs) and ifaces):
        return []
    return table_text(_netdev_table(rs, ifaces))
