"""The incremental update of a pod's tables: set-element deletes/adds instead of a table replace.

Why: replacing a table with a large peer set costs milliseconds and grows with the set, while
a peer that comes or goes is one element. When the new ruleset differs from the programmed one
only in set elements (same skeleton: chains, rules, set declarations, identity), the change is
ONE nft transaction of `delete element` / `add element`, plus the replacement of the rule that
carries the whole ruleset's fingerprint (chain `state`, see `render_nft`), so adoption after a
restart and drift checks keep working. Otherwise the caller replaces the table as before.

Pure: it works on two `render_nft.Rendered` values and returns text; only the dataplane worker
runs it. Elements are compared as rendered text, which is one-to-one with the ruleset's
canonical (sorted, disjoint) AddrRange/PeerPort tuples, so the deletes and adds of one set never
leave two overlapping intervals: deletes come first in the transaction, and the final content is
exactly the new canonical set.
"""

from __future__ import annotations

from agent.dataplane.nft import render as render_nft
from agent.dataplane.nft import setdiff


def patch(old: render_nft.Rendered, new: render_nft.Rendered) -> str | None:
    """The transaction that turns tables holding `old` into tables holding `new`.

    None when only a full replace can do it: the skeletons differ, or either side lacks the
    structure (rendered by something that does not split its sets). An empty string when the
    two are the same ruleset.
    """
    if not old.shape or old.shape != new.shape:
        return None
    old_sets, new_sets = dict(old.sets), dict(new.sets)
    if old_sets.keys() != new_sets.keys():
        return None  # cannot happen with equal shapes; never guess
    if old.fingerprint == new.fingerprint:
        return ""
    chain = f"inet {render_nft.TABLE} {render_nft.STATE_CHAIN}"
    lines = [
        f"flush chain {chain}\n",
        f"add rule {chain} {render_nft.state_rule(new.fingerprint)}\n",
    ]
    for name in sorted(new_sets):
        if old_sets[name] == new_sets[name]:
            continue  # most sets of a pod (a shared tier region: the very same tuple)
        family, set_name = name.split(" ", 1)
        pairs = setdiff.diff(old_sets[name], new_sets[name], old_sets[name], new_sets[name])
        gone, added = ([text for text, _ in side] for side in pairs)
        if gone:
            lines.append(_elements("delete", family, set_name, gone))
        if added:
            lines.append(_elements("add", family, set_name, added))
    return "".join(lines)


def counts(old: render_nft.Rendered, new: render_nft.Rendered) -> tuple[int, int]:
    """(elements deleted, elements added) between two rulesets of the same shape."""
    old_sets, new_sets = dict(old.sets), dict(new.sets)
    deleted = added = 0
    for name in set(old_sets) | set(new_sets):
        before, after = set(old_sets.get(name, ())), set(new_sets.get(name, ()))
        deleted += len(before - after)
        added += len(after - before)
    return deleted, added


def _elements(verb: str, family: str, set_name: str, elements: list[str]) -> str:
    return f"{verb} element {family} {render_nft.TABLE} {set_name} {{ {', '.join(elements)} }}\n"
