"""The set-element patch of a pod's tables straight from the change of its ruleset's elements,
without rendering the new ruleset from scratch or diffing whole set texts.

Why: when a remote pod's label flips, a local pod's ruleset changes by an element or two in
its peer sets, yet rendering it again formats every one of its thousands of elements (tens of
milliseconds), and diffing the two renderings compares them all again. The incremental
calculator (`agent.calc.elements`) replaces only a stretch of each canonical tuple and keeps
the rest as the very same objects, so the changed stretch is found by identity from both ends
(equality is the fallback), and only its elements are formatted.

`derive` takes the ruleset and the rendering of the last commit and the new ruleset. When the
two rulesets differ only in the elements of the policy peer sets (`<direction>_{any,ports}{4,6}`
and each policy's counting sets `<direction>_p<N>_...`) it returns the new rendering, equal to
`render_nft.render` of the new ruleset (the patched sets spliced into the old tables, then
`render_nft.assemble`: the same script and fingerprint), and the transaction that
`agent.dataplane.nft.incremental.patch` would write for the two (state rule, then per changed
set its deletes and adds). Anything else (tiers, containment, the node guard, mode, policies,
interfaces) returns None: the caller renders and diffs as before.

Pure; interval subtleties need no care here: the elements stay the canonical (disjoint,
maximal) ones a full render writes, and the transaction deletes before it adds.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from agent.calc import ruleset
from agent.dataplane import protocol
from agent.dataplane.nft import render as render_nft

# A canonical tuple of one kind of element: AddrRange (any port) or PeerPort.
Items = Sequence[Any]


@dataclasses.dataclass(frozen=True)
class Derived:
    """The new rendering and the transaction from the old one (deleted/added element counts
    for the metrics)."""

    rendered: render_nft.Rendered
    script: str
    deleted: int
    added: int
    changes: tuple[protocol.SetChange, ...] = ()  # the same transaction, as numbers


def derive(
    old_rs: ruleset.PodRuleset,
    old: render_nft.Rendered,
    new_rs: ruleset.PodRuleset,
    interfaces: Sequence[str],
) -> Derived | None:
    """The rendering of `new_rs` and the element transaction from `old` (the rendering of
    `old_rs` for the same interfaces); None when more than peer-set elements changed."""
    if not old.tables or old.interfaces != render_nft.canonical_interfaces(interfaces):
        return None
    if _frame(old_rs) != _frame(new_rs):
        return None
    try:
        return _derive(old_rs, old, new_rs)
    except _Mismatch:
        return None


class _Mismatch(Exception):
    """The old rendering does not hold the old ruleset's elements."""


def _derive(
    old_rs: ruleset.PodRuleset, old: render_nft.Rendered, new_rs: ruleset.PodRuleset
) -> Derived | None:
    inet = old.tables[0]
    elements = {s.name: s.elements for s in inet.sets}
    changes: dict[str, tuple[list[str], list[str], protocol.SetChange]] = {}
    for direction, old_d, new_d in (
        (ruleset.Direction.INGRESS, old_rs.ingress, new_rs.ingress),
        (ruleset.Direction.EGRESS, old_rs.egress, new_rs.egress),
    ):
        if not new_d.isolated:
            continue
        sources = [
            (
                f"{direction.value}_",
                old_d.any_port_peers,
                new_d.any_port_peers,
                old_d.port_peers,
                new_d.port_peers,
            )
        ]
        sources += [
            (
                f"{direction.value}_p{n}_",
                a.any_port_peers,
                b.any_port_peers,
                a.port_peers,
                b.port_peers,
            )
            for n, (a, b) in enumerate(zip(old_d.per_policy, new_d.per_policy, strict=True))
        ]
        for prefix, old_any, new_any, old_ports, new_ports in sources:
            kinds: tuple[tuple[str, Items, Items, Callable[[Items, int], list[str]]], ...] = (
                ("any", old_any, new_any, _any_texts),
                ("ports", old_ports, new_ports, _port_texts),
            )
            for kind, before, after, fmt in kinds:
                if before is after:
                    continue
                for family in (4, 6):
                    name = f"{prefix}{kind}{family}"
                    if name not in elements:
                        return None  # not the layout this module knows: render whole
                    spliced = _splice(elements[name], before, after, family, fmt)
                    if spliced is None:
                        continue
                    elements[name], gone, added = spliced
                    if gone or added:
                        changes[name] = (
                            [t for t, _ in gone],
                            [t for t, _ in added],
                            protocol.SetChange(
                                name,
                                family,
                                kind == "ports",
                                tuple(_numbers(e) for _, e in gone),
                                tuple(_numbers(e) for _, e in added),
                            ),
                        )
    sets = tuple(
        dataclasses.replace(s, elements=elements[s.name]) if s.name in changes else s
        for s in inet.sets
    )
    plain = render_nft.Table(inet.family, inet.name, None, sets, inet.counters, inet.chains[:-1])
    rendered = render_nft.assemble(new_rs, plain, old.tables[1:], old.interfaces)
    if rendered.fingerprint == old.fingerprint:
        return Derived(rendered, "", 0, 0, ())
    chain = f"inet {render_nft.TABLE} {render_nft.STATE_CHAIN}"
    lines = [
        f"flush chain {chain}\n",
        f"add rule {chain} {render_nft.state_rule(rendered.fingerprint)}\n",
    ]
    deleted = added_count = 0
    for name in sorted(changes):
        gone_texts, added_texts, _ = changes[name]
        deleted, added_count = deleted + len(gone_texts), added_count + len(added_texts)
        if gone_texts:
            lines.append(_elements("delete", name, gone_texts))
        if added_texts:
            lines.append(_elements("add", name, added_texts))
    sets_changed = tuple(changes[name][2] for name in sorted(changes))
    return Derived(rendered, "".join(lines), deleted, added_count, sets_changed)


def _frame(rs: ruleset.PodRuleset) -> ruleset.PodRuleset:
    """`rs` without the elements of its policy peer sets: what must be equal for a patch."""
    return dataclasses.replace(rs, ingress=_bare(rs.ingress), egress=_bare(rs.egress))


def _bare(d: ruleset.DirectionRuleset) -> ruleset.DirectionRuleset:
    return dataclasses.replace(
        d,
        any_port_peers=(),
        port_peers=(),
        per_policy=tuple(ruleset.PolicyPeers(p.policy) for p in d.per_policy),
    )


def _any_texts(items: Sequence[ruleset.AddrRange], family: int) -> list[str]:
    return [render_nft.format_addr(r) for r in items if r.family == family]


def _port_texts(items: Sequence[ruleset.PeerPort], family: int) -> list[str]:
    return render_nft.port_elements(items, family)


def _family_of(item: ruleset.AddrRange | ruleset.PeerPort) -> int:
    return item.family if isinstance(item, ruleset.AddrRange) else item.addrs.family


def _splice(
    texts: tuple[str, ...],
    before: Items,
    after: Items,
    family: int,
    fmt: Callable[[Items, int], list[str]],
) -> tuple[tuple[str, ...], list[tuple[str, Any]], list[tuple[str, Any]]] | None:
    """The element texts of one family's set after the change `before` -> `after` (canonical
    tuples, sorted by family first), and the elements deleted and added (text, element); None
    when this family's elements did not change."""
    start, old_end, new_end = _window(before, after)
    # Each family's elements are one contiguous run of the sorted tuples.
    old_lo = bisect.bisect_left(before, family, key=_family_of)
    old_hi = bisect.bisect_right(before, family, key=_family_of)
    new_lo = bisect.bisect_left(after, family, key=_family_of)
    new_hi = bisect.bisect_right(after, family, key=_family_of)
    old_part = before[max(start, old_lo) : min(old_end, old_hi)]
    new_part = after[max(start, new_lo) : min(new_end, new_hi)]
    if not old_part and not new_part:
        return None
    kept_head = max(0, min(start, old_hi) - old_lo)
    kept_tail = max(0, old_hi - max(old_end, old_lo))
    old_texts, new_texts = fmt(old_part, family), fmt(new_part, family)
    if len(texts) != old_hi - old_lo:  # not the rendering of `before`: never guess
        raise _Mismatch
    spliced = (*texts[:kept_head], *new_texts, *texts[len(texts) - kept_tail :])
    old_set, new_set = set(old_texts), set(new_texts)
    gone = [(t, e) for t, e in zip(old_texts, old_part, strict=True) if t not in new_set]
    added = [(t, e) for t, e in zip(new_texts, new_part, strict=True) if t not in old_set]
    return spliced, gone, added


def _numbers(item: ruleset.AddrRange | ruleset.PeerPort) -> tuple[int, ...]:
    if isinstance(item, ruleset.AddrRange):
        return (item.first, item.last)
    return (item.addrs.first, item.addrs.last, item.protocol, item.ports.first, item.ports.last)


def _window(before: Items, after: Items) -> tuple[int, int, int]:
    """(start, end in `before`, end in `after`): outside these, the two hold the same
    elements at the same places (mostly the same objects: the calculator splices)."""
    limit = min(len(before), len(after))
    start = 0
    while start < limit and (before[start] is after[start] or before[start] == after[start]):
        start += 1
    old_end, new_end = len(before), len(after)
    while (
        old_end > start
        and new_end > start
        and (before[old_end - 1] is after[new_end - 1] or before[old_end - 1] == after[new_end - 1])
    ):
        old_end -= 1
        new_end -= 1
    return start, old_end, new_end


def _elements(verb: str, name: str, texts: list[str]) -> str:
    return f"{verb} element inet {render_nft.TABLE} {name} {{ {', '.join(texts)} }}\n"
