"""The set-element patch of a pod's tables straight from the change of its ruleset's elements,
without rendering the new ruleset from scratch or diffing whole set texts.

Why: when a remote pod's label flips, a local pod's ruleset changes by an element or two in
its peer sets, yet rendering it again formats every one of its thousands of elements (tens of
milliseconds), and diffing the two renderings compares them all again. The incremental
calculator (`agent.calc.elements`) replaces only a stretch of each canonical tuple and keeps
the rest as the very same objects, so the changed stretch is found by identity from both ends
(equality is the fallback), and only its elements are formatted.

`derive` takes the ruleset and the rendering of the last commit and the new ruleset. When the
two rulesets differ only in the elements of the policy peer sets (`<direction>_any{4,6}`,
`_exact{4,6}` and the address sets of each port spec, `_<proto>_<ports>_v{4,6}`, and each
policy's counting sets `<direction>_p<N>_...`), on the same port specs, it returns the new
rendering, equal to `render_nft.render` of the new ruleset (the patched sets spliced into the
old tables by `render_nft.with_sets`, which hashes only those sets again: the same tables and
fingerprint, in time proportional to the changed sets, not the pod's), and the transaction
that `agent.dataplane.nft.incremental.patch` would write for the two (state rule, then per
changed set its deletes and adds). Admin-tier set elements (an edit of a tier rule's ports or
peers) are patched the same way, by `agent.dataplane.nft.tierpatch`. Anything else (the tiers
beyond their set elements, containment, the node guard, mode, policies, interfaces), or a peer
change that brings the first element of a port spec or takes its last (the spec's sets, chain
and map key come or go), returns None: the caller renders and diffs as before.

Pure; interval subtleties need no care here: the elements stay the canonical (disjoint,
maximal) ones a full render writes, and the transaction deletes before it adds.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
import operator
from collections.abc import Sequence
from typing import Any

from agent.calc import memo, ruleset
from agent.dataplane import protocol
from agent.dataplane.nft import render as render_nft
from agent.dataplane.nft import setdiff, tierpatch

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
    `old_rs` for the same interfaces); None when more than peer-set and tier-set elements
    changed."""
    if not old.tables or old.interfaces != render_nft.canonical_interfaces(interfaces):
        return None
    if not old.digests:
        return None  # not a rendering `render_nft.assemble` made
    # The first comparison settles the common case (no tier element changed) without copies.
    if _frame(old_rs) != _frame(new_rs) and _frame(tierpatch.bare(old_rs)) != _frame(
        tierpatch.bare(new_rs)
    ):
        return None  # more than peer-set and tier-set elements changed
    try:
        return _derive(old_rs, old, new_rs)
    except _Mismatch:
        return None


class _Mismatch(Exception):
    """The old rendering does not hold the old ruleset's elements."""


Changes = tierpatch.Changes


def _derive(
    old_rs: ruleset.PodRuleset, old: render_nft.Rendered, new_rs: ruleset.PodRuleset
) -> Derived | None:
    inet = old.tables[0]
    held = {s.name: s for s in inet.sets}
    found = _patch_sets(held, old_rs, new_rs)
    if found is None:
        return None
    patched, changes = found
    tiers = tierpatch.patch_sets(held, {c.name: c for c in inet.chains}, old_rs, new_rs)
    if tiers is None:
        return None
    patched |= tiers[0]
    changes |= tiers[1]
    rendered = render_nft.with_sets(old, new_rs, patched)
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


def _pairs(old_rs: ruleset.PodRuleset, new_rs: ruleset.PodRuleset) -> list[tuple[str, Any, Any]]:
    """(set name prefix, old, new) of every peer-set source: each isolated direction and
    each of its policies' own elements."""
    pairs: list[tuple[str, Any, Any]] = []
    for direction, old_d, new_d in (
        (ruleset.Direction.INGRESS, old_rs.ingress, new_rs.ingress),
        (ruleset.Direction.EGRESS, old_rs.egress, new_rs.egress),
    ):
        if not new_d.isolated:
            continue
        pairs.append((f"{direction.value}_", old_d, new_d))
        pairs += [
            (f"{direction.value}_p{n}_", a, b)
            for n, (a, b) in enumerate(zip(old_d.per_policy, new_d.per_policy, strict=True))
        ]
    return pairs


def _patch_sets(
    held: dict[str, render_nft.NamedSet], old_rs: ruleset.PodRuleset, new_rs: ruleset.PodRuleset
) -> tuple[dict[str, render_nft.NamedSet], Changes] | None:
    """The sets whose elements changed, patched, and their changes; None when a set is not
    where this module expects it, or the change brings or takes a whole port spec (then the
    skeleton changes: a port spec's sets and chains come and go with it)."""
    patched: dict[str, render_nft.NamedSet] = {}
    changes: Changes = {}
    for prefix, a, b in _pairs(old_rs, new_rs):
        for kind, before, after in (
            ("any", a.any_port_peers, b.any_port_peers),
            ("ports", a.port_peers, b.port_peers),
        ):
            if before is after:
                continue
            start, old_end, new_end, sorted_into = _sorted_window(kind, before, after)
            if start == old_end == new_end:
                continue
            for spec in sorted_into.specs[0] | sorted_into.specs[1]:
                if any(render_nft.port_spec_set(prefix, spec, f) not in held for f in (4, 6)):
                    return None  # a new port spec: its sets, chain and map key come with it
            for slot, target, (gone_items, new_items) in sorted_into.targets(prefix):
                named = held.get(target.name)
                if named is None:
                    return None  # not the layout this module knows
                found = _SPLICES.get(
                    (*slot, start),
                    (named.members, named.elements, before, after),
                    functools.partial(_splice, named, before, start, gone_items, new_items, target),
                )
                if found is not None:
                    patched[target.name] = dataclasses.replace(
                        named,
                        elements=found.elements,
                        members=found.members,
                        elements_digest=found.digest,
                    )
                    numbers = dataclasses.replace(found.change[2], name=target.name)
                    changes[target.name] = (found.change[0], found.change[1], numbers)
            gone_specs = sorted_into.specs[0] - sorted_into.specs[1]
            if gone_specs and _spec_gone(prefix, gone_specs, after, patched, held):
                return None
    return patched, changes


def _spec(e: ruleset.PeerPort) -> render_nft.Spec:
    return (e.protocol, e.ports.first, e.ports.last)


def _spec_gone(
    prefix: str,
    specs: set[render_nft.Spec],
    after: Items,
    patched: dict[str, render_nft.NamedSet],
    held: dict[str, render_nft.NamedSet],
) -> bool:
    """Whether a port spec the replaced elements had and their replacements lack has no
    element left (a fresh rendering declares no sets for it). Its address sets are the quick
    answer; only when both are empty (its elements were all exact ones) is `after` searched,
    from the start: a common spec is found at once."""
    for spec in specs:
        names = [render_nft.port_spec_set(prefix, spec, family) for family in (4, 6)]
        if any(patched.get(name, held[name]).members for name in names):
            continue
        if not any(_spec(e) == spec for e in after):
            return True
    return False


def same_frame(a: ruleset.PodRuleset, b: ruleset.PodRuleset) -> bool:
    """Whether the two rulesets differ at most in the elements of their policy peer sets."""
    return _frame(a) == _frame(b)


def window(before: Items, after: Items) -> tuple[int, int, int]:
    """`_window`, for the iptables twin (`agent.dataplane.ipt.fastpatch`)."""
    return _window(before, after)


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


@dataclasses.dataclass(frozen=True)
class _Target:
    """A set an element kind of a prefix fills: `kind` "any" (AddrRange elements, address
    texts), "exact" (PeerPort elements, `addr . proto . port` texts) or "spec" (PeerPort
    elements of one port spec, address texts)."""

    name: str
    family: int
    kind: str


class _Sorted:
    """The elements of a window sorted into the sets that hold them, in one pass: per set
    (by its `what` and family: "any", "exact" or a port spec), (the old window's elements,
    the new window's), in order; and the port specs of each window's port elements (exact
    ones included). The same for every prefix: the pods sharing the tuples share it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.items: dict[tuple[Any, int], tuple[list[Any], list[Any]]] = {}
        self.specs: tuple[set[render_nft.Spec], set[render_nft.Spec]] = (set(), set())

    def add(self, part: Items, side: int) -> None:
        specs = self.specs[side]
        for e in part:
            if self.kind == "any":
                key: tuple[Any, int] = ("any", e.family)
            else:
                spec = _spec(e)
                specs.add(spec)
                exact = render_nft.is_exact(e)
                key = ("exact", e.addrs.family) if exact else (spec, e.addrs.family)
            held = self.items.get(key)
            if held is None:
                held = self.items[key] = ([], [])
            held[side].append(e)

    def targets(
        self, prefix: str
    ) -> list[tuple[tuple[Any, int], _Target, tuple[list[Any], list[Any]]]]:
        """The sets of `prefix` the window touches: (what and family, the set, its elements
        of each side)."""
        return [(key, _target(prefix, key), items) for key, items in self.items.items()]


def _target(prefix: str, key: tuple[Any, int]) -> _Target:
    what, family = key
    if what in ("any", "exact"):
        return _Target(f"{prefix}{what}{family}", family, what)
    return _Target(render_nft.port_spec_set(prefix, what, family), family, "spec")


def _texts(items: Items, target: _Target) -> list[str]:
    if target.kind == "exact":
        return render_nft.port_elements(items, target.family)
    if target.kind == "spec":
        return [render_nft.format_addr(e.addrs) for e in items]
    return [render_nft.format_addr(r) for r in items]


_Window = tuple[int, int, int, "_Sorted"]  # start, end in before, end in after, its sort


# The last few sorts of a window and splices of a set (`memo.ByIdentity`): the local pods
# whose policies resolve to the same peers hold the very same canonical tuples (the
# calculator's) and the very same rendered members and texts (`render_nft`'s caches, and the
# splices kept here, after a first patch), so one event's change is sorted, spliced, formatted
# and hashed once for all of them, and its result stays shared for the next event.
_SPLICES: memo.ByIdentity[_Spliced | None] = memo.ByIdentity(64)
_SORTED: memo.ByIdentity[_Window] = memo.ByIdentity(64)


def clear_cache() -> None:
    """Forget every kept sort and splice (tests: each pod's derived on its own)."""
    _SPLICES.clear()
    _SORTED.clear()


def _sorted_window(kind: str, before: Items, after: Items) -> _Window:
    """The window where `before` and `after` differ (`_window`) and its elements sorted into
    sets; shared by the pods holding the very same tuples, whatever their set prefix."""

    def make() -> _Window:
        start, old_end, new_end = _window(before, after)
        sorted_into = _Sorted(kind)
        sorted_into.add(before[start:old_end], 0)
        sorted_into.add(after[start:new_end], 1)
        return start, old_end, new_end, sorted_into

    return _SORTED.get((kind,), (before, after), make)


@dataclasses.dataclass(frozen=True, slots=True)
class _Spliced:
    """A set's elements after a window's change (texts, members, their digest) and the change
    (`setdiff.change`, of a set named ""): the same for every pod and prefix holding the very
    same elements and tuples, whatever the set's name."""

    elements: tuple[str, ...]
    members: tuple[Any, ...]
    digest: bytes
    change: setdiff.Change


def _splice(
    named: render_nft.NamedSet,
    before: Items,
    start: int,
    gone_items: list[Any],
    new_items: list[Any],
    target: _Target,
) -> _Spliced | None:
    """The set's elements after its elements `gone_items` of the window of `before` (from
    `start`) became `new_items`, and the change; None when none of its changed.

    The set's members are the elements of `before` it holds, in order; those before the window
    are exactly the members less than `before[start]` (canonical tuples are sorted), so the
    window's place in the set is one bisection."""
    if not gone_items and not new_items:
        return None
    members, texts = named.members, named.elements
    if len(members) != len(texts):
        raise _Mismatch
    low = bisect.bisect_left(members, before[start]) if start < len(before) else len(members)
    high = low + len(gone_items)
    if list(members[low:high]) != gone_items:
        raise _Mismatch  # not the rendering of `before`: never guess
    old_texts = list(texts[low:high])
    new_texts = _texts(new_items, target)
    elements = (*texts[:low], *new_texts, *texts[high:])
    gone, added = setdiff.diff(old_texts, new_texts, gone_items, new_items)
    kind = "exact" if target.kind == "exact" else "any"
    return _Spliced(
        elements,
        (*members[:low], *new_items, *members[high:]),
        # hashed here, once for every pod sharing the splice (`with_sets` would, per pod)
        render_nft.elements_digest(elements),
        setdiff.change("", target.family, kind, gone, added, addrs_only=target.kind == "spec"),
    )


def _window(before: Items, after: Items) -> tuple[int, int, int]:
    """(start, end in `before`, end in `after`): outside these, the two hold the very same
    objects at the same places (the calculator splices its tuples). Found by identity in C
    (`map`/`compress`), not element by element in Python: a set holds thousands. Equal but
    distinct elements only widen the window, which is still exact (texts are compared)."""
    limit = min(len(before), len(after))
    firsts = itertools.compress(itertools.count(), map(operator.is_not, before, after))
    start = next(firsts, limit)
    room = limit - start
    lasts = itertools.compress(
        itertools.count(), map(operator.is_not, reversed(before), reversed(after))
    )
    tail = min(next(lasts, room), room)
    return start, len(before) - tail, len(after) - tail


def _elements(verb: str, name: str, texts: list[str]) -> str:
    return f"{verb} element inet {render_nft.TABLE} {name} {{ {', '.join(texts)} }}\n"
