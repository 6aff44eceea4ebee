"""The iptables twin of `agent.dataplane.nft.fastpatch`: the `ipset` element batch and the new
programme straight from the change of a ruleset's peer elements, without rendering the ruleset
again or diffing two restore scripts line by line.

Why: rendering a pod with a thousand peer ranges splits them into thousands of CIDR lines
(tens of milliseconds), and the render path then compares every line of both scripts, while a
label flip changes a few. Here only the changed stretch of each canonical tuple is split into
lines; each changed set's block of the restore script (`create` line, then one `add` line per
entry, in element order) gets them spliced in place of the old ones, found by text search from
the first line of the first element at or after the stretch (the set's members, kept beside
the programme, say which element that is); its `create` line takes the new entry count's
sizes. The fingerprint hashes whole texts (`render_ipt.fingerprint`), so the patched programme
is hashed in C and equals a fresh render's, as the batch equals `ipt.incremental.patch`'s
(unit tests compare both on random inputs and calculator walks).

When more than peer elements changed, a set would appear or empty (its rule comes or goes),
or an element needs a port-range set the programme does not have, `derive` returns None and
the caller renders. Pure.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

from agent.calc import ruleset
from agent.dataplane import protocol
from agent.dataplane.ipt import render as render_ipt
from agent.dataplane.nft import fastpatch as nft_fastpatch
from agent.dataplane.nft import render as render_nft

_PROTO = {6: "tcp", 17: "udp", 132: "sctp"}


@dataclasses.dataclass(frozen=True)
class Layout:
    """What the agent keeps beside an iptables programme to patch it: each peer set's
    canonical members in order (name with the `GEN` placeholder), the canonical interfaces,
    and the programme's texts other than the sets that its fingerprint hashes."""

    interfaces: tuple[str, ...]
    members: dict[str, tuple[Any, ...]]
    ranges: dict[str, tuple[tuple[int, int, int], ...]]  # the long port ranges with a set
    rules4: str
    rules6: str
    netdev: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Derived:
    program: protocol.IptProgram
    fingerprint: str
    script: str
    layout: Layout


def layout_of(
    rs: ruleset.PodRuleset, program: protocol.IptProgram, interfaces: tuple[str, ...]
) -> Layout | None:
    """The layout of `program`, the rendering of `rs` for `interfaces` (canonical); None when
    it has no fingerprint set (nothing to patch)."""
    if f"create {render_ipt.STATE_SET} " not in program.ipset:
        return None
    members: dict[str, tuple[Any, ...]] = {}
    ranges: dict[str, tuple[tuple[int, int, int], ...]] = {}
    for direction, tag, d in _sources(rs):
        for family in (4, 6):
            keys = tuple(sorted({_key(e) for e in d.port_peers if _ranged(e, family)}))
            ranges[_source(direction, family, tag)] = keys
            for name, chosen in _targets(direction, family, tag, keys):
                held = tuple([e for e in (*d.any_port_peers, *d.port_peers) if chosen(e)])
                if held:
                    members[name] = held
    return Layout(
        interfaces,
        members,
        ranges,
        _rules(program.v4),
        _rules(program.v6),
        tuple(render_nft.netdev_table(rs, interfaces)),
    )


def derive(
    old_rs: ruleset.PodRuleset,
    old: protocol.IptProgram,
    old_fp: str,
    layout: Layout,
    new_rs: ruleset.PodRuleset,
    interfaces: tuple[str, ...],
) -> Derived | None:
    """The programme of `new_rs`, its fingerprint and the batch from `old` (of `old_rs`,
    fingerprint `old_fp`, kept with `layout`); None when only the render path can do it."""
    if layout.interfaces != interfaces or not nft_fastpatch.same_frame(old_rs, new_rs):
        return None
    text = old.ipset[: old.ipset.index(f"create {render_ipt.STATE_SET} ")]
    members = dict(layout.members)
    gone: list[str] = []
    added: list[str] = []
    for (direction, tag, a), (_, _, b) in zip(_sources(old_rs), _sources(new_rs), strict=True):
        for before, after in ((a.any_port_peers, b.any_port_peers), (a.port_peers, b.port_peers)):
            if before is after:
                continue
            start, old_end, new_end = nft_fastpatch.window(before, after)
            if start == old_end == new_end:
                continue
            old_part, new_part = before[start:old_end], after[start:new_end]
            for family in (4, 6):
                keys = layout.ranges.get(_source(direction, family, tag), ())
                if any(_key(e) not in keys for e in (*old_part, *new_part) if _ranged(e, family)):
                    return None  # a port range without a set of its own yet (or no longer)
                for name, chosen in _targets(direction, family, tag, keys):
                    found = _splice(text, members, name, before, start, old_part, new_part, chosen)
                    if found is None:
                        return None
                    text, old_lines, new_lines = found
                    gone += old_lines
                    added += new_lines
    fp = render_ipt.fingerprint(new_rs, text, layout.rules4, layout.rules6, layout.netdev)
    old_owner, new_owner = f"podseg fp={old_fp} ", f"podseg fp={fp} "
    program = protocol.IptProgram(
        ipset=text
        + f"create {render_ipt.STATE_SET} hash:ip family inet6 hashsize 64 maxelem 1\n"
        + f"add {render_ipt.STATE_SET} {render_ipt.state_element(fp)}\n",
        v4=old.v4.replace(old_owner, new_owner, 1),
        v6=old.v6.replace(old_owner, new_owner, 1),
        netdev=old.netdev,
    )
    if fp == old_fp:
        return Derived(program, fp, "", dataclasses.replace(layout, members=members))
    gone_set, added_set = set(gone), set(added)
    script = [f"del {render_ipt.STATE_SET} {render_ipt.state_element(old_fp)}\n"]
    script += [f"del -exist {line[4:]}" for line in sorted(gone_set - added_set)]
    script += [f"add -exist {line[4:]}" for line in sorted(added_set - gone_set)]
    script.append(f"add {render_ipt.STATE_SET} {render_ipt.state_element(fp)}\n")
    return Derived(program, fp, "".join(script), dataclasses.replace(layout, members=members))


def _sources(rs: ruleset.PodRuleset) -> list[tuple[ruleset.Direction, str, Any]]:
    """(direction, set tag, elements) of every peer-set source: each isolated direction and
    each of its policies' counting sets (render_ipt's `_peer_sets` and `_hit_rules`)."""
    out: list[tuple[ruleset.Direction, str, Any]] = []
    for direction, d in (
        (ruleset.Direction.INGRESS, rs.ingress),
        (ruleset.Direction.EGRESS, rs.egress),
    ):
        if d.isolated:
            out.append((direction, "", d))
            out += [(direction, f"h{n}", p) for n, p in enumerate(d.per_policy)]
    return out


def _expanded(e: ruleset.PeerPort) -> bool:
    return e.ports.last - e.ports.first + 1 <= render_ipt.EXPAND_PORTS and e.protocol in _PROTO


def _ranged(e: Any, family: int) -> bool:
    """A port element of `family` in a port-range set of its own (`r<n>`)."""
    return isinstance(e, ruleset.PeerPort) and e.addrs.family == family and not _expanded(e)


def _key(e: ruleset.PeerPort) -> tuple[int, int, int]:
    return (e.protocol, e.ports.first, e.ports.last)


def _source(direction: ruleset.Direction, family: int, tag: str) -> str:
    return f"{direction.value[0]}{family}{tag}"


def _targets(
    direction: ruleset.Direction, family: int, tag: str, keys: tuple[tuple[int, int, int], ...]
) -> Iterator[tuple[str, Callable[[Any], bool]]]:
    """The sets of one source and family and which elements each holds: `a` (any port),
    `p` (single ports and short ranges, expanded), `r<n>` (one per longer port range of
    `keys`, numbered in sorted order)."""
    yield (
        _name(direction, family, tag + "a"),
        lambda r: isinstance(r, ruleset.AddrRange) and r.family == family,
    )
    yield (
        _name(direction, family, tag + "p"),
        lambda e: isinstance(e, ruleset.PeerPort) and e.addrs.family == family and _expanded(e),
    )
    for n, key in enumerate(keys):
        yield _name(direction, family, tag + f"r{n}"), _in_range_set(family, key)


def _in_range_set(family: int, key: tuple[int, int, int]) -> Callable[[Any], bool]:
    def chosen(e: Any) -> bool:
        return (
            isinstance(e, ruleset.PeerPort)
            and e.addrs.family == family
            and (e.protocol, e.ports.first, e.ports.last) == key
        )

    return chosen


def _name(direction: ruleset.Direction, family: int, kind: str) -> str:
    return f"{render_ipt.PREFIX}{render_ipt.GEN}-{direction.value[0]}{family}{kind}"


def _lines(name: str, items: Any) -> list[str]:
    """The restore lines of `items` in set `name`, as render_ipt writes them."""
    out: list[str] = []
    for e in items:
        if isinstance(e, ruleset.AddrRange):
            out += [f"add {name} {c}\n" for c in render_ipt.cidrs(e)]
        elif name.endswith("p"):
            proto = _PROTO[e.protocol]
            nets = render_ipt.cidrs(e.addrs)
            ports = range(e.ports.first, e.ports.last + 1)
            out += [f"add {name} {n},{proto}:{p}\n" for n in nets for p in ports]
        else:
            out += [f"add {name} {c}\n" for c in render_ipt.cidrs(e.addrs)]
    return out


def _splice(
    text: str,
    members: dict[str, tuple[Any, ...]],
    name: str,
    before: Any,
    start: int,
    old_part: Any,
    new_part: Any,
    chosen: Callable[[Any], bool],
) -> tuple[str, list[str], list[str]] | None:
    """`text` with set `name`'s lines of the window replaced (and its `create` line resized),
    and the window's old and new lines; None when the set would appear or empty, or is not
    where expected."""
    gone_items = [e for e in old_part if chosen(e)]
    new_items = [e for e in new_part if chosen(e)]
    if not gone_items and not new_items:
        return text, [], []
    held = members.get(name, ())
    if not held:
        return None  # a set that does not exist yet: its rule comes with it
    low = bisect.bisect_left(held, before[start]) if start < len(before) else len(held)
    high = low + len(gone_items)
    if list(held[low:high]) != gone_items:
        return None
    kept = len(held) - len(gone_items)
    if kept + len(new_items) == 0:
        return None  # the set empties: its rule goes
    members[name] = (*held[:low], *new_items, *held[high:])
    head = text.find(f"create {name} ")
    if head < 0:
        return None
    end = text.find("\ncreate ", head)
    end = len(text) if end < 0 else end + 1
    block = text[head:end]
    old_lines, new_lines = _lines(name, gone_items), _lines(name, new_items)
    cut = len(block)
    if low < len(held):
        first = "\n" + _lines(name, held[low : low + 1])[0]
        cut = block.find(first) + 1
    stop = cut + sum(map(len, old_lines))
    if cut <= 0 or block[cut:stop] != "".join(old_lines):
        return None
    count = block.count("\nadd ") - len(old_lines) + len(new_lines)
    words = block[: block.index("\n")].split()  # create NAME KIND family INET ...
    create = render_ipt.create_line(name, words[2], 4 if words[4] == "inet" else 6, count)
    body = block[block.index("\n") + 1 : cut] + "".join(new_lines) + block[stop:]
    return text[:head] + create + body + text[end:], old_lines, new_lines


def _rules(restore: str) -> str:
    """The rules of a family's restore script after the owner rule, as its fingerprint hashes
    them."""
    owner = restore.index(f'-A {render_ipt.INPUT} -m comment --comment "podseg fp=')
    return restore[restore.index("\n", owner) + 1 : restore.rindex("COMMIT\n")]
