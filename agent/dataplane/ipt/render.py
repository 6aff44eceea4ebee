"""Render a `PodRuleset` for the iptables backend: ipsets plus `iptables-restore` scripts.

Pure text generation, the iptables twin of `render_nft`, so the exact kernel program is
unit-testable and carries the same kind of fingerprint (`podseg fp=<16 hex> pod=<ns>/<name>` in
the comment of the first rule of `PODSEG-INPUT`), which adoption, drift detection and the sweep
read back. Everything lives in table `filter`; every chain we create is prefixed `PODSEG-` and
the only rules outside them are the jumps `-I INPUT 1 -j PODSEG-INPUT` and
`-I OUTPUT 1 -j PODSEG-OUTPUT` (owned too: each apply deletes and re-inserts them).

Per family (IPv4 with `iptables-restore`, IPv6 with `ip6tables-restore`):

    PODSEG-INPUT  : owner comment; then, when quarantined or ingress is isolated: -i lo ACCEPT;
                    jump PODSEG-QUARANTINE-IN (first: established traffic included); when
                    ingress is isolated: established/related ACCEPT unless the conntrack entry
                    carries DENY_MARK; ICMPv6 link plumbing; the counting-only rules of each
                    isolating policy's own sets (hits); one `-m set` jump to
                    PODSEG-INGRESS-ALLOW per peer set; the ingress "policy" deny rules
    PODSEG-OUTPUT : when quarantined, node-guarded or egress is isolated: -o lo ACCEPT; jump
                    PODSEG-QUARANTINE-OUT; established/related ACCEPT unless DENY_MARK; jump
                    PODSEG-NODE-GUARD (whatever the policies allow); when egress is isolated:
                    ICMPv6 link plumbing; one `-m set` jump to PODSEG-EGRESS-ALLOW per peer
                    set; jump PODSEG-EGRESS-DENY
    PODSEG-QUARANTINE-IN  : forensic allow-from sources ACCEPT; ICMPv6 link; "quarantine" deny
    PODSEG-QUARANTINE-OUT : replies to allow-from sources ACCEPT; ICMPv6 link; "quarantine" deny
    PODSEG-NODE-GUARD     : blocked addresses (any port), node addresses x guarded protocol/ports
                            -> jump PODSEG-NODE-GUARD-DENY ("node-guard" deny rules)
    PODSEG-INGRESS-ALLOW  : every accept of the ingress policy: sample a new connection to
                            NFLOG (`podseg accept ingress`, rate limited); ACCEPT
    PODSEG-EGRESS-ALLOW   : every accept of the egress policy: sample a new connection
                            (`podseg accept egress`); jump PODSEG-EGRESS-ACCEPT
    PODSEG-EGRESS-ACCEPT  : clear DENY_MARK on the conntrack entry; ACCEPT
    PODSEG-EGRESS-DENY    : the egress "policy" deny rules
    PODSEG-EGRESS-MARK    : set DENY_MARK on packet and conntrack entry; ACCEPT

Every drop comes from `deny_rules` (the twin of `render_nft.deny_rules`): a rule without target
whose comment is the counter name (`deny.<direction>.<reason>.<mode>`; its packet counter, read
from `iptables-save -c`, is the exact total), an NFLOG rule under `-m limit` (group, prefix, rate
and snaplen as render_nft, so `agent.flows` reads both backends alike), then the verdict: DROP
for ingress, for egress a jump to PODSEG-EGRESS-MARK per pod interface (else DROP), ACCEPT in
visibility mode (which never marks). Quarantine and node guard always enforce.

Peers live in ipsets, so a direction has a constant number of rules whatever the number of
peers: `hash:net` for peers allowed on any port, `hash:net,port` (`cidr,proto:port`) for
single ports and short port ranges (expanded, at most EXPAND_PORTS ports), and for each longer
(protocol, port range) of the ruleset one `hash:net` set matched together with `--dport a:b`
(their number depends on the policies' port ranges, never on the peers). Address ranges are
split into CIDRs (a /0 into two /1s, which ipset requires).

Set names carry a generation token (`GEN`, replaced by the worker at apply time) so that a new
ruleset's sets are built beside the old ones and the rules switch to them inside one
`iptables-restore --noflush` commit per family; the old generation is destroyed afterwards.

When there are sets, the fingerprint is also the one element of set `PODSEG-<gen>-fp` (kept
referenced by chain PODSEG-STATE of IPv6, which nothing jumps to): a change of peers alone
becomes `ipset` element additions and deletions on the live sets plus a swap of that element
(`agent.dataplane.ipt.incremental`), and the fingerprint read back is the set's, so adoption
and drift checks see the patched ruleset. The owner comment keeps the fingerprint of the last
whole apply.

Denied egress: a DROP in OUTPUT makes a local UDP send() fail with EPERM, so, as in the
nftables backend, OUTPUT only marks denied packets and the drop happens in the device egress
hook of the pod's interface: the nftables `table netdev podseg` (render_nft's, kept for the drop
alone; there is no iptables hook after the IP output path, and tc's drop action is not built
into every kernel). `table inet podseg` is never used by this backend.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable, Sequence

from agent.calc import ruleset
from agent.dataplane.nft import render as render_nft

FORMAT_VERSION = "podseg-ipt/7"
GEN = "@GEN@"  # generation placeholder in set names; the worker substitutes a fresh token
PREFIX = "PODSEG-"
INPUT = "PODSEG-INPUT"
OUTPUT = "PODSEG-OUTPUT"
ND_IN = "PODSEG-ND-IN"
ND_OUT = "PODSEG-ND-OUT"
ND_QUARANTINE_IN = "PODSEG-ND-Q-IN"
ND_QUARANTINE_OUT = "PODSEG-ND-Q-OUT"
EGRESS_ACCEPT = "PODSEG-EGRESS-ACCEPT"
INGRESS_ALLOW = "PODSEG-INGRESS-ALLOW"
EGRESS_ALLOW = "PODSEG-EGRESS-ALLOW"
EGRESS_DENY = "PODSEG-EGRESS-DENY"
EGRESS_MARK = "PODSEG-EGRESS-MARK"
QUARANTINE_IN = "PODSEG-QUARANTINE-IN"
QUARANTINE_OUT = "PODSEG-QUARANTINE-OUT"
NODE_GUARD = "PODSEG-NODE-GUARD"
NODE_GUARD_DENY = "PODSEG-NODE-GUARD-DENY"
# The admin tiers, per direction: the tier chain, its deny chain, and its chain for the
# protocols without ports (jumped from the tier chain for anything but TCP, UDP and SCTP).
TIER_CHAINS = {
    (direction, tier): (f"PODSEG-{name}-{d}", f"PODSEG-{name}-{d}-DENY", f"PODSEG-{name}-{d}-O")
    for direction, d in ((ruleset.Direction.INGRESS, "IN"), (ruleset.Direction.EGRESS, "OUT"))
    for tier, name in (("admin", "ADMIN"), ("baseline", "BASELINE"))
}
STATE = "PODSEG-STATE"  # never jumped to: it only keeps the fingerprint set referenced
STATE_SET = f"{PREFIX}{GEN}-fp"
CHAINS = (
    INPUT,
    OUTPUT,
    ND_IN,
    ND_OUT,
    ND_QUARANTINE_IN,
    ND_QUARANTINE_OUT,
    EGRESS_ACCEPT,
    INGRESS_ALLOW,
    EGRESS_ALLOW,
    EGRESS_DENY,
    EGRESS_MARK,
    QUARANTINE_IN,
    QUARANTINE_OUT,
    NODE_GUARD,
    NODE_GUARD_DENY,
    *(chain for chains in TIER_CHAINS.values() for chain in chains),
    STATE,
)
JUMPS = (("INPUT", INPUT), ("OUTPUT", OUTPUT))
EXPAND_PORTS = 8  # port ranges up to this size become hash:net,port elements
MIN_MAXELEM = 65536
MIN_HASHSIZE = 1024

_MARK = f"0x{render_nft.DENY_MARK:x}"
_CLEAR = f"0x{0xFFFFFFFF & ~render_nft.DENY_MARK:x}"
_PROTO = {6: "tcp", 17: "udp", 132: "sctp"}
_FP_RE = re.compile(r'--comment "?podseg fp=([0-9a-f]{16})[ "]')
_COMMENT_RE = re.compile(r'--comment "(podseg fp=[0-9a-f]{16}[^"]*)"')
_SET_REF_RE = re.compile(r"--match-set (PODSEG-\S+) ")
_COUNTER_RE = re.compile(r'^\[(\d+):\d+\] -A PODSEG-\S+ -m comment --comment "?([^" ]+)"?$')
_HIT_RE = re.compile(r'^\[(\d+):\d+\] -A PODSEG-\S+ -m comment --comment "?(hit\.[^" ]+)"? ')
_RATE_RE = re.compile(r"^(\d+)/(\w+) burst (\d+) packets$")
# ICMPv6 types: router solicitation 133, advertisement 134, neighbour solicitation 135,
# advertisement 136; MLD query 130, reports 131 and 143, done 132 (render_nft's sets).
_ND_IN_TYPES, _ND_OUT_TYPES = (134, 135, 136), (133, 135, 136)
_MLD_IN_TYPES, _MLD_OUT_TYPES = (130, 131, 132, 143), (131, 132, 143)


@dataclasses.dataclass(frozen=True)
class Rendered:
    """Everything one apply needs; set names still hold the `GEN` placeholder.

    `ipset`: `ipset restore` input creating and filling this generation's sets.
    `v4`, `v6`: `iptables-restore --noflush` bodies (without the jump fix-ups, see `compose`).
    `netdev`: nft script creating `table netdev podseg` (the egress drop), or "" for none.
    """

    fingerprint: str
    ipset: str
    v4: str
    v6: str
    netdev: str


def render(rs: ruleset.PodRuleset, interfaces: Sequence[str]) -> Rendered:
    """The iptables programme for `rs`; ValueError for an invalid interface name."""
    ifaces = render_nft.canonical_interfaces(interfaces)
    sets: list[str] = []
    bodies: dict[int, list[str]] = {}
    for family in (4, 6):
        family_sets, rules = _family(rs, family, ifaces)
        sets.extend(family_sets)
        bodies[family] = rules
    if sets:  # the fingerprint of the peer sets' content, patched with them (ipt.incremental)
        bodies[6].append(f"-A {STATE} -m set --match-set {STATE_SET} src\n")
    netdev_lines = render_nft.netdev_table(rs, ifaces)
    fp = fingerprint(rs, "".join(sets), "".join(bodies[4]), "".join(bodies[6]), netdev_lines)
    if sets:
        sets.append(f"create {STATE_SET} hash:ip family inet6 hashsize 64 maxelem 1\n")
        sets.append(f"add {STATE_SET} {state_element(fp)}\n")
    pod = re.sub(r"[^A-Za-z0-9._/-]", "_", f"{rs.namespace}/{rs.pod}")
    comment = f"podseg fp={fp} pod={pod}".encode()[: render_nft.COMMENT_MAX_BYTES]
    owner = f'-A {INPUT} -m comment --comment "{comment.decode(errors="ignore")}"\n'
    netdev = ""
    if netdev_lines:
        table = f"table netdev {render_nft.TABLE}"
        netdev = f"{table}\ndelete {table}\n" + "".join(netdev_lines)
    return Rendered(
        fingerprint=fp,
        ipset="".join(sets),
        v4=_restore(owner, bodies[4]),
        v6=_restore(owner, bodies[6]),
        netdev=netdev,
    )


def fingerprint(
    rs: ruleset.PodRuleset, sets: str, rules4: str, rules6: str, netdev: Sequence[str]
) -> str:
    """The fingerprint of a programme from its parts' texts: the sets (without the fingerprint
    set), each family's rules after the owner rule, the netdev table's lines. Whole texts, not
    line by line, so that `agent.dataplane.ipt.fastpatch` can hash a patched programme in C."""
    content = [FORMAT_VERSION, sets, "--v4--", rules4, "--v6--", rules6, "".join(netdev)]
    return render_nft.fingerprint_of(rs, content)


def state_element(fingerprint: str) -> str:
    """The one element of the fingerprint set: the fingerprint's 64 bits as the low half of
    an IPv6 address (never matched: its chain is never jumped to)."""
    value = int(fingerprint, 16)
    return str(ipaddress.IPv6Address(value))


def parse_state(save: str) -> str | None:
    """The fingerprint held by the fingerprint set, from `ipset save` (or `list`) output."""
    for line in save.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "add" and parts[1].endswith("-fp"):
            try:
                return f"{int(ipaddress.IPv6Address(parts[2])):016x}"
            except ValueError:
                return None
    return None


def netdev_delete_script() -> str:
    """nft script removing the egress-drop table; succeeds when it is absent."""
    table = f"table netdev {render_nft.TABLE}"
    return f"{table}\ndelete {table}\n"


def compose(body: str, current_save: str, generation: str) -> str:
    """The final `iptables-restore --noflush` input for one family.

    `current_save` is `iptables-save -t filter` of the namespace now: every existing jump to a
    PODSEG- chain from a built-in chain is deleted and the jumps are re-inserted at the top, and
    PODSEG- chains this version does not declare are flushed and removed, all in the same
    commit as the new rules.
    """
    lines = body.replace(GEN, generation).splitlines(keepends=True)
    assert lines[0] == "*filter\n" and lines[-1] == "COMMIT\n"
    declared = len(CHAINS) + 1
    fixups = [line.replace("-A ", "-D ", 1) + "\n" for line in _foreign_jumps(current_save)]
    extra = [c for c in _owned_chains(current_save) if c not in CHAINS]
    fixups += [f"-F {c}\n" for c in extra] + [f"-X {c}\n" for c in extra]
    fixups += [f"-I {builtin} 1 -j {chain}\n" for builtin, chain in JUMPS]
    return "".join(lines[:declared] + fixups + lines[declared:])


def delete_script(current_save: str) -> str | None:
    """`iptables-restore --noflush` input removing every PODSEG- jump and chain; None when the
    namespace holds none."""
    jumps = _foreign_jumps(current_save)
    chains = _owned_chains(current_save)
    if not jumps and not chains:
        return None
    out = ["*filter\n"]
    out += [line.replace("-A ", "-D ", 1) + "\n" for line in jumps]
    out += [f"-F {c}\n" for c in chains] + [f"-X {c}\n" for c in chains]
    out.append("COMMIT\n")
    return "".join(out)


def parse_fingerprint(save: str) -> str | None:
    """The fingerprint in `iptables-save -t filter` output, if it holds our owner rule."""
    for line in save.splitlines():
        if line.startswith(f"-A {INPUT} "):
            match = _FP_RE.search(line)
            if match:
                return match.group(1)
    return None


def parse_comment(save: str) -> str | None:
    """The whole owner comment (`podseg fp=... pod=<ns>/<name>`), if present."""
    for line in save.splitlines():
        if line.startswith(f"-A {INPUT} "):
            match = _COMMENT_RE.search(line)
            if match:
                return match.group(1)
    return None


def owned_lines(save: str) -> list[str]:
    """The part of a save that is ours or decides whether ours runs: every rule of the
    PODSEG- chains and every rule of the built-in INPUT and OUTPUT chains (a foreign rule
    inserted before our jump could bypass us), in order. Counters are not part of it."""
    keep = ("-A INPUT ", "-A OUTPUT ", f"-A {PREFIX}", f":{PREFIX}")
    return [line for line in save.splitlines() if line.startswith(keep)]


def referenced_sets(save: str) -> list[str]:
    """Names of the PODSEG- ipsets the rules of a save match against (sorted, unique)."""
    return sorted({m.group(1) for m in _SET_REF_RE.finditer(save)})


def set_headers(terse: str) -> dict[str, str]:
    """Each set's block of `ipset list -t` output (type, header, size, references, entry
    count), keyed by set name."""
    out: dict[str, str] = {}
    name = ""
    for line in terse.splitlines():
        if line.startswith("Name: "):
            name = line[6:].strip()
            out[name] = ""
        elif name and line.strip():
            out[name] += line.strip() + "\n"
    return out


def set_names(ipset_script: str) -> list[str]:
    """Names of the sets an `ipset` restore script creates."""
    return [line.split()[1] for line in ipset_script.splitlines() if line.startswith("create ")]


def _foreign_jumps(save: str) -> list[str]:
    return [
        line
        for line in save.splitlines()
        if line.startswith(("-A INPUT ", "-A OUTPUT ")) and f"-j {PREFIX}" in line
    ]


def _owned_chains(save: str) -> list[str]:
    return [
        line[1:].split()[0]
        for line in save.splitlines()
        if line.startswith(f":{PREFIX}") and line[1:].split()
    ]


def _restore(owner: str, rules: Sequence[str]) -> str:
    head = ["*filter\n", *(f":{c} - [0:0]\n" for c in CHAINS)]
    return "".join([*head, owner, *rules, "COMMIT\n"])


def cidrs(r: ruleset.AddrRange) -> list[str]:
    """The CIDRs covering an address range exactly; a /0 becomes two /1 (ipset needs >= 1).

    Integer arithmetic (the largest aligned block at each step, in ascending order: the same
    list as `ipaddress.summarize_address_range`, several times faster, which counts when a
    peer set holds thousands of ranges)."""
    bits = 32 if r.family == 4 else 128
    text = _v4_text if r.family == 4 else _v6_text
    out: list[str] = []
    first, last = r.first, r.last
    while first <= last:
        size = first & -first if first else 1 << bits
        while size > last - first + 1:
            size >>= 1
        prefix = bits + 1 - size.bit_length()
        if prefix == 0:  # the whole family: two halves
            half = 1 << (bits - 1)
            return [f"{text(0)}/1", f"{text(half)}/1"]
        out.append(f"{text(first)}/{prefix}")
        first += size
    return out


def _v4_text(value: int) -> str:
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


def _v6_text(value: int) -> str:
    return str(ipaddress.IPv6Address(value))


def _set_name(direction: ruleset.Direction, family: int, kind: str) -> str:
    return f"{PREFIX}{GEN}-{direction.value[0]}{family}{kind}"


def _create(name: str, kind: str, family: int, elements: Sequence[str]) -> list[str]:
    out = [create_line(name, kind, family, len(elements))]
    out.extend(f"add {name} {e}\n" for e in elements)
    return out


def create_line(name: str, kind: str, family: int, count: int) -> str:
    """The `create` line of a set of `count` entries."""
    inet = "inet" if family == 4 else "inet6"
    maxelem = max(MIN_MAXELEM, count)
    # Buckets sized to the content up front: lookups stay short, no resize while loading.
    hashsize = max(MIN_HASHSIZE, 1 << max(0, count - 1).bit_length())
    return f"create {name} {kind} family {inet} hashsize {hashsize} maxelem {maxelem}\n"


def _hit_rules(
    direction: ruleset.Direction, d: ruleset.DirectionRuleset, family: int
) -> tuple[list[str], list[str]]:
    """(ipset lines, rule specs) counting each isolating policy's own peers: rules without a
    target (they only count) whose comment names the policy's hit counter
    (`render_nft.hit_counter_name`), read back by `parse_counters`."""
    sets: list[str] = []
    specs: list[str] = []
    for n, peers in enumerate(d.per_policy):
        own = ruleset.DirectionRuleset(True, peers.any_port_peers, peers.port_peers)
        own_sets, matches = _peer_sets(direction, own, family, tag=f"h{n}")
        name = render_nft.hit_counter_name(direction, peers.policy)
        sets += own_sets
        specs += [f'-m comment --comment "{name}" {m}' for m in matches]
    return sets, specs


def _peer_sets(
    direction: ruleset.Direction, d: ruleset.DirectionRuleset, family: int, tag: str = ""
) -> tuple[list[str], list[str]]:
    """(ipset lines, match specs) of one isolated direction and family (`tag` sets apart the
    names of one policy's own sets)."""
    where = "src" if direction is ruleset.Direction.INGRESS else "dst"
    sets: list[str] = []
    matches: list[str] = []
    anyport = [c for r in d.any_port_peers if r.family == family for c in cidrs(r)]
    if anyport:
        name = _set_name(direction, family, tag + "a")
        sets += _create(name, "hash:net", family, anyport)
        matches.append(f"-m set --match-set {name} {where}")
    single: list[str] = []
    ranges: dict[tuple[int, int, int], list[str]] = {}
    for e in d.port_peers:
        if e.addrs.family != family:
            continue
        nets = cidrs(e.addrs)
        proto = _PROTO.get(e.protocol, str(e.protocol))
        size = e.ports.last - e.ports.first + 1
        if size <= EXPAND_PORTS and e.protocol in _PROTO:
            numbers = range(e.ports.first, e.ports.last + 1)
            single.extend(f"{n},{proto}:{p}" for n in nets for p in numbers)
        else:
            ranges.setdefault((e.protocol, e.ports.first, e.ports.last), []).extend(nets)
    if single:
        name = _set_name(direction, family, tag + "p")
        sets += _create(name, "hash:net,port", family, single)
        matches.append(f"-m set --match-set {name} {where},dst")
    for n, ((protocol, first, last), nets) in enumerate(sorted(ranges.items())):
        name = _set_name(direction, family, tag + f"r{n}")
        sets += _create(name, "hash:net", family, nets)
        proto = _PROTO.get(protocol, str(protocol))
        ports = ""
        if protocol in _PROTO and (first, last) != (0, 65535):
            ports = f" -m {proto} --dport {first}:{last}"
        matches.append(f"-p {proto}{ports} -m set --match-set {name} {where}")
    return sets, matches


def _icmpv6(types: Sequence[int], hop_limit: int, match: str) -> list[str]:
    return [
        f"-p ipv6-icmp -m icmp6 --icmpv6-type {t} -m hl --hl-eq {hop_limit} {match}-j ACCEPT"
        for t in types
    ]


def _nd(rs: ruleset.PodRuleset) -> tuple[list[str], list[str]]:
    """The neighbour discovery chains of IPv6 (the twins of render_nft's `nd_*` chains):
    within the link only, and in quarantine only what resolving the gateway needs."""
    sets: list[str] = []
    rules: list[str] = []
    if rs.ingress.tiered or rs.egress.tiered:
        sets += _create(f"{PREFIX}{GEN}-nl6", "hash:net", 6, _nd_link(rs.link))
        link = f"-m set --match-set {PREFIX}{GEN}-nl6"
        mld = [f"-s {s} -d ff02::/16 " for s in ("::/128", "fe80::/10")]
        rules += _chain_rules(
            ND_IN,
            _icmpv6(_ND_IN_TYPES, 255, f"{link} src ")
            + [r for m in mld for r in _icmpv6(_MLD_IN_TYPES, 1, m)],
        )
        rules += _chain_rules(
            ND_OUT,
            _icmpv6(_ND_OUT_TYPES, 255, f"{link} dst ")
            + [r for m in mld for r in _icmpv6(_MLD_OUT_TYPES, 1, m)],
        )
    if rs.quarantine is not None:
        gateway_sets, gateway = _addr_set("ng", 6, render_nft.gateway_addresses(rs.link))
        sets += gateway_sets
        pair = (135, 136)
        rules += _chain_rules(
            ND_QUARANTINE_IN,
            [r for name in gateway for r in _icmpv6(pair, 255, f"-m set --match-set {name} src ")]
            + _icmpv6((135,), 255, "-s fe80::/10 "),
        )
        rules += _chain_rules(
            ND_QUARANTINE_OUT,
            [r for name in gateway for r in _icmpv6(pair, 255, f"-m set --match-set {name} dst ")]
            + _icmpv6((136,), 255, "-d fe80::/10 "),
        )
    return sets, rules


def _nd_link(link: ruleset.Link) -> list[str]:
    return [c for r in render_nft.nd_link_addresses(link) for c in cidrs(r)]


def _family(
    rs: ruleset.PodRuleset, family: int, ifaces: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(ipset lines, rules after the owner rule) for one address family."""
    sets, rules = _nd(rs) if family == 6 else ([], [])
    for part in (_ingress, _egress, _containment):
        part_sets, part_rules = part(rs, family, ifaces)
        sets += part_sets
        rules += part_rules
    return sets, rules


_ESTABLISHED = (
    f"-m conntrack --ctstate RELATED,ESTABLISHED -m connmark --mark 0x0/{_MARK} -j ACCEPT"
)


def _link(family: int, chain: str) -> list[str]:
    return [f"-p ipv6-icmp -j {chain}"] if family == 6 else []


def _tiers(
    rs: ruleset.PodRuleset,
    direction: ruleset.Direction,
    family: int,
    ifaces: Sequence[str],
    accept: str,
) -> tuple[list[str], list[str], dict[str, str]]:
    """(ipset lines, rules of the tier chains, tier -> jump for the hook chain) of a
    direction's admin tiers (the twin of `render_nft._tiers`): per entry, its peer-port sets
    matched with its verdict (ACCEPT through `accept`, Deny to the tier's deny chain, Pass:
    RETURN), and its sets for the protocols without ports in the tier's `-O` chain (entered
    for anything but TCP, left again by UDP and SCTP), in precedence order: the first match
    decides, and a packet costs at most one lookup per rule of the tiers, whatever the peers."""
    d = rs.ingress if direction is ruleset.Direction.INGRESS else rs.egress
    sets: list[str] = []
    rules: list[str] = []
    jumps: dict[str, str] = {}
    for tier, entries in (("admin", d.admin), ("baseline", d.baseline)):
        if not entries:
            continue
        chain, deny, other = TIER_CHAINS[(direction, tier)]
        verdicts = {
            ruleset.TierAction.ACCEPT: f"-j {accept}",
            ruleset.TierAction.DENY: f"-j {deny}",
            ruleset.TierAction.PASS: "-j RETURN",
        }
        specs = [f"! -p tcp -j {other}"]
        other_specs = ["-p udp -j RETURN", "-p sctp -j RETURN"]
        for n, entry in enumerate(entries):
            verdict = verdicts[entry.action]
            ported = tuple(e for e in entry.elements if e.protocol != ruleset.OTHER_PROTOCOL)
            rest = tuple(e.addrs for e in entry.elements if e.protocol == ruleset.OTHER_PROTOCOL)
            for target, own, tag in (
                (specs, ruleset.DirectionRuleset(True, (), ported), f"{tier[0].upper()}{n}"),
                (other_specs, ruleset.DirectionRuleset(True, rest), f"{tier[0].upper()}{n}o"),
            ):
                own_sets, matches = _peer_sets(direction, own, family, tag=tag)
                sets += own_sets
                target += [f"{m} {verdict}" for m in matches]
        rules += _chain_rules(chain, specs) + _chain_rules(other, other_specs)
        rules += _chain_rules(deny, deny_rules(direction, tier, ifaces, mode=rs.mode))
        jumps[tier] = f"-j {chain}"
    return sets, rules, jumps


def _ingress(
    rs: ruleset.PodRuleset, family: int, ifaces: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The INPUT chain: quarantine first, then the Admin tier, then the ingress policy when
    it isolates, else the Baseline tier."""
    if not rs.ingress.tiered and rs.quarantine is None and not render_nft.observes_default(rs):
        return [], []
    specs = ["-i lo -j ACCEPT"]
    if rs.quarantine is not None:
        specs.append(f"-j {QUARANTINE_IN}")  # before anything, established included
    sets, rules, jumps = _tiers(rs, ruleset.Direction.INGRESS, family, ifaces, "ACCEPT")
    if rs.ingress.tiered:
        specs += [_ESTABLISHED, *_link(family, ND_IN)]
        specs += [jumps["admin"]] if "admin" in jumps else []
    if rs.ingress.isolated:
        peer_sets, matches = _peer_sets(ruleset.Direction.INGRESS, rs.ingress, family)
        hit_sets, hits = _hit_rules(ruleset.Direction.INGRESS, rs.ingress, family)
        sets += peer_sets + hit_sets
        specs += [
            *hits,
            *(f"{m} -j {INGRESS_ALLOW}" for m in matches),
            *deny_rules(ruleset.Direction.INGRESS, "policy", ifaces, mode=rs.mode),
        ]
        rules += _chain_rules(
            INGRESS_ALLOW, [accept_log_rule(ruleset.Direction.INGRESS), "-j ACCEPT"]
        )
    elif "baseline" in jumps:
        specs.append(jumps["baseline"])
    if render_nft.observes_default(rs) and not rs.ingress.isolated:
        specs.append(accept_log_rule(ruleset.Direction.INGRESS))  # what the default lets in
    return sets, _chain_rules(INPUT, specs) + rules


def _egress(
    rs: ruleset.PodRuleset, family: int, ifaces: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The OUTPUT chain (quarantine, node guard, the egress policy) and the chains it jumps
    to for accepting, denying and marking."""
    contained = rs.quarantine is not None or rs.node_guard is not None
    if not rs.egress.tiered and not contained and not render_nft.observes_default(rs):
        return [], []
    sets, rules, jumps = _tiers(rs, ruleset.Direction.EGRESS, family, ifaces, EGRESS_ACCEPT)
    specs = ["-o lo -j ACCEPT"]
    if rs.quarantine is not None:
        specs.append(f"-j {QUARANTINE_OUT}")
    # A conntrack entry carrying DENY_MARK (a denied flow, or a connection strict mode cut)
    # gets no shortcut: each of its packets is judged again.
    specs.append(_ESTABLISHED)
    if rs.node_guard is not None:
        specs.append(f"-j {NODE_GUARD}")  # whatever the policies allow
    if rs.egress.tiered:
        specs += _link(family, ND_OUT)
        specs += [jumps["admin"]] if "admin" in jumps else []
        rules += _chain_rules(EGRESS_ACCEPT, [f"-j CONNMARK --and-mark {_CLEAR}", "-j ACCEPT"])
    if rs.egress.isolated:
        peer_sets, matches = _peer_sets(ruleset.Direction.EGRESS, rs.egress, family)
        hit_sets, hits = _hit_rules(ruleset.Direction.EGRESS, rs.egress, family)
        sets += peer_sets + hit_sets
        specs += [*hits, *(f"{m} -j {EGRESS_ALLOW}" for m in matches), f"-j {EGRESS_DENY}"]
        rules += _chain_rules(
            EGRESS_ALLOW, [accept_log_rule(ruleset.Direction.EGRESS), f"-j {EGRESS_ACCEPT}"]
        )
        rules += _chain_rules(
            EGRESS_DENY, deny_rules(ruleset.Direction.EGRESS, "policy", ifaces, mode=rs.mode)
        )
    elif "baseline" in jumps:
        specs.append(jumps["baseline"])
    if render_nft.observes_default(rs) and not rs.egress.isolated:
        specs.append(accept_log_rule(ruleset.Direction.EGRESS))
    rules += _chain_rules(OUTPUT, specs)
    rules += _chain_rules(
        EGRESS_MARK,
        [f"-j MARK --or-mark {_MARK}", f"-j CONNMARK --or-mark {_MARK}", "-j ACCEPT"],
    )
    return sets, rules


def _containment(
    rs: ruleset.PodRuleset, family: int, ifaces: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The quarantine chains (forensic sources in, replies to them out) and the node guard."""
    sets: list[str] = []
    rules: list[str] = []
    if rs.quarantine is not None:
        sets, allowed = _addr_set("qa", family, rs.quarantine.allow_from)
        rules += _chain_rules(
            QUARANTINE_IN,
            [
                *(f"-m set --match-set {name} src -j ACCEPT" for name in allowed),
                *_link(family, ND_QUARANTINE_IN),
                *deny_rules(ruleset.Direction.INGRESS, "quarantine", ifaces),
            ],
        )
        rules += _chain_rules(
            QUARANTINE_OUT,
            [
                *(
                    f"-m conntrack --ctdir REPLY -m set --match-set {name} dst -j ACCEPT"
                    for name in allowed
                ),
                *_link(family, ND_QUARANTINE_OUT),
                *deny_rules(ruleset.Direction.EGRESS, "quarantine", ifaces),
            ],
        )
    if rs.node_guard is not None:
        guard_sets, rules_guard = _node_guard(rs.node_guard, family)
        sets += guard_sets
        rules += _chain_rules(NODE_GUARD, rules_guard)
        rules += _chain_rules(
            NODE_GUARD_DENY, deny_rules(ruleset.Direction.EGRESS, "node-guard", ifaces)
        )
    return sets, rules


def _addr_set(
    kind: str, family: int, ranges: Sequence[ruleset.AddrRange]
) -> tuple[list[str], list[str]]:
    """A `hash:net` set of the ranges of `family` (none when empty): (ipset lines, [name])."""
    elements = [c for r in ranges if r.family == family for c in cidrs(r)]
    if not elements:
        return [], []
    name = f"{PREFIX}{GEN}-{kind}{family}"
    return _create(name, "hash:net", family, elements), [name]


def _node_guard(guard: ruleset.NodeGuard, family: int) -> tuple[list[str], list[str]]:
    """(ipset lines, PODSEG-NODE-GUARD rule specs): blocked addresses on any port, node
    addresses on each guarded protocol/port range (a protocol without ports: all of it)."""
    blocked_sets, blocked = _addr_set("gb", family, guard.blocked)
    node_sets, nodes = _addr_set("gn", family, guard.node_addrs)
    matches = [f"-m set --match-set {name} dst" for name in nodes]
    scoped_sets: list[str] = []
    if family == 6 and guard.scoped:
        # A link-local gateway is guarded on its interface (hash:net,iface, "dst,dst").
        name = f"{PREFIX}{GEN}-gs6"
        elements = [f"{cidrs(r)[0]},{iface}" for iface, r in guard.scoped]
        scoped_sets = _create(name, "hash:net,iface", 6, elements)
        matches.append(f"-m set --match-set {name} dst,dst")
    specs = [f"-m set --match-set {name} dst -j {NODE_GUARD_DENY}" for name in blocked]
    for match in matches:
        for p in guard.ports:
            proto = _PROTO.get(p.protocol, str(p.protocol))
            ports = ""
            if p.protocol in _PROTO and (p.ports.first, p.ports.last) != (0, 65535):
                ports = f" -m {proto} --dport {p.ports.first}:{p.ports.last}"
            specs.append(f"-p {proto}{ports} {match} -j {NODE_GUARD_DENY}")
    return blocked_sets + node_sets + scoped_sets, specs


def log_limit() -> str:
    """`render_nft.LOG_RATE` as iptables `-m limit` options (the same kernel rate)."""
    match = _RATE_RE.match(render_nft.LOG_RATE)
    if match is None:
        raise ValueError(f"unsupported LOG_RATE {render_nft.LOG_RATE!r}")
    rate, unit, burst = match.groups()
    return f"-m limit --limit {rate}/{unit} --limit-burst {burst}"


def accept_log_rule(direction: ruleset.Direction) -> str:
    """The rule sampling accepted new connections (the twin of `render_nft.accept_log_rule`)."""
    match = _RATE_RE.match(render_nft.ACCEPT_RATE)
    if match is None:
        raise ValueError(f"unsupported ACCEPT_RATE {render_nft.ACCEPT_RATE!r}")
    rate, unit, burst = match.groups()
    return (
        f"-m conntrack --ctstate NEW -m limit --limit {rate}/{unit} --limit-burst {burst} "
        f"-j NFLOG --nflog-group {render_nft.NFLOG_GROUP} "
        f'--nflog-prefix "{render_nft.accept_prefix(direction)}" '
        f"--nflog-size {render_nft.LOG_SNAPLEN} "
        f"--nflog-threshold {render_nft.LOG_QUEUE_THRESHOLD}"
    )


def deny_rules(
    direction: ruleset.Direction,
    reason: str,
    ifaces: Sequence[str],
    *,
    mode: ruleset.PolicyMode = ruleset.PolicyMode.ENFORCE,
) -> list[str]:
    """Rule specs of one deny (the iptables twin of `render_nft.deny_rules`): count (a rule
    without target named by the counter name), NFLOG under the kernel rate limit, verdict.

    Egress keeps the silent drop: a jump to PODSEG-EGRESS-MARK for each pod interface (the
    netdev egress hook drops the marked packet), DROP only for any other interface.
    Visibility mode logs and counts the same, then accepts without marking.
    """
    if reason not in render_nft.DROP_REASONS:
        raise ValueError(f"unknown drop reason {reason!r}")
    out = [
        f'-m comment --comment "{render_nft.counter_name(direction, reason, mode)}"',
        f"{log_limit()} -j NFLOG --nflog-group {render_nft.NFLOG_GROUP} "
        f'--nflog-prefix "{render_nft.log_prefix(direction, reason, mode)}" '
        f"--nflog-size {render_nft.LOG_SNAPLEN} "
        f"--nflog-threshold {render_nft.LOG_QUEUE_THRESHOLD}",
    ]
    if mode is ruleset.PolicyMode.VISIBILITY:
        return [*out, "-j ACCEPT"]
    if direction is ruleset.Direction.EGRESS:
        out += [f"-o {i} -j {EGRESS_MARK}" for i in ifaces]
    return [*out, "-j DROP"]


def parse_counters(save_counters: str) -> dict[str, int]:
    """Packet totals per deny counter name from `iptables-save -c -t filter` output (rules of
    the same name, e.g. of both families' saves concatenated, are summed)."""
    out: dict[str, int] = {}
    for line in save_counters.splitlines():
        match = _COUNTER_RE.match(line)
        if match and render_nft.parse_counter_name(match.group(2)) is not None:
            out[match.group(2)] = out.get(match.group(2), 0) + int(match.group(1))
            continue
        match = _HIT_RE.match(line)
        if match and render_nft.parse_hit_counter_name(match.group(2)) is not None:
            out[match.group(2)] = out.get(match.group(2), 0) + int(match.group(1))
    return out


def _chain_rules(chain: str, specs: Iterable[str]) -> list[str]:
    return [f"-A {chain} {spec}\n" for spec in specs]
