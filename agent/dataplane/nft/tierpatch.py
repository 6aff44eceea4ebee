"""The set-element patch of a pod's admin-tier sets, for the derived patch of
`agent.dataplane.nft.fastpatch`.

Why: an Admin-tier edit (a rule's ports, its peers) reaches every pod the policy's subject
selects, often every pod of the node. Rendered whole and diffed, each pod's ruleset costs a
full render and a libnftables transaction; yet the change is a few elements of the tier sets
that `render_nft._tiers` declares for each entry (`<direction>_<tier><n>_p`, `_a4`, `_a6`,
`_other4`, `_other6`, or `_ports4`, `_ports6` and `_other*` of an entry that is not a
product). When two rulesets differ in their tiers only by those elements (same entries in the
same order, same policies, rules and actions, the same product-or-not form: the chains and
set declarations are the same), this module renders the new tier sets alone and turns their
element differences into the sets to splice and the element changes (texts for libnftables,
numbers for the netlink batch of `agent.dataplane.nft.setelem`).

Pure. Only the entries that changed are rendered, and their rules must already be in the held
tier chain, so a patch is never derived where a fresh render would declare something else.
"""

from __future__ import annotations

import dataclasses

from agent.calc import ruleset
from agent.dataplane.nft import render as render_nft
from agent.dataplane.nft import setdiff

# set name -> its change
Changes = dict[str, setdiff.Change]


def bare(rs: ruleset.PodRuleset) -> ruleset.PodRuleset:
    """`rs` without the elements of its tier entries: what must be equal for a tier patch."""
    return dataclasses.replace(rs, ingress=_bare(rs.ingress), egress=_bare(rs.egress))


def _bare(d: ruleset.DirectionRuleset) -> ruleset.DirectionRuleset:
    if not d.tiered:
        return d
    return dataclasses.replace(
        d, admin=tuple(map(_bare_entry, d.admin)), baseline=tuple(map(_bare_entry, d.baseline))
    )


def _bare_entry(entry: ruleset.TierEntry) -> ruleset.TierEntry:
    return ruleset.TierEntry(
        entry.policy, entry.rule, entry.action, (), None if entry.addrs is None else ()
    )


def patch_sets(
    held: dict[str, render_nft.NamedSet],
    held_chains: dict[str, render_nft.Chain],
    old_rs: ruleset.PodRuleset,
    new_rs: ruleset.PodRuleset,
) -> tuple[dict[str, render_nft.NamedSet], Changes] | None:
    """The tier sets whose elements differ between the tables `held` (sets and chains by
    name, the rendering of `old_rs`) and a rendering of `new_rs`, as new sets and changes;
    None when a tier set or chain is not as a fresh rendering would declare it."""
    patched: dict[str, render_nft.NamedSet] = {}
    changes: Changes = {}
    for direction, old_d, new_d in (
        (ruleset.Direction.INGRESS, old_rs.ingress, new_rs.ingress),
        (ruleset.Direction.EGRESS, old_rs.egress, new_rs.egress),
    ):
        for tier, old_entries, new_entries in (
            ("admin", old_d.admin, new_d.admin),
            ("baseline", old_d.baseline, new_d.baseline),
        ):
            if old_entries is new_entries or len(old_entries) != len(new_entries):
                continue  # a different number of entries: `bare` tells them apart already
            held_rules: set[str] | None = None
            for n, (old_entry, new_entry) in enumerate(zip(old_entries, new_entries, strict=True)):
                if old_entry is new_entry or old_entry == new_entry:
                    continue
                body = render_nft._Body(())
                rules = render_nft.tier_entry(body, direction, tier, n, new_entry)
                if held_rules is None:
                    chain = held_chains.get(f"{direction.value}_{tier}")
                    held_rules = set(chain.rules) if chain is not None else set()
                if not held_rules.issuperset(rules):
                    return None
                for named in body.sets:
                    if not _patch(held.get(named.name), named, patched, changes):
                        return None
    return patched, changes


def _patch(
    old: render_nft.NamedSet | None,
    new: render_nft.NamedSet,
    patched: dict[str, render_nft.NamedSet],
    changes: Changes,
) -> bool:
    """Record `new` and its change from `old` when their elements differ; False when `old`
    is not a set of the same declaration holding one member per element."""
    if old is None or (old.type, old.flags) != (new.type, new.flags):
        return False
    if old.elements is new.elements or old.elements == new.elements:
        return True
    change = _change(old, new)
    if change is None:
        return False
    patched[new.name] = new
    changes[new.name] = change
    return True


def _change(old: render_nft.NamedSet, new: render_nft.NamedSet) -> setdiff.Change | None:
    """The change from `old` to `new`; None when a set does not hold one member per element."""
    if len(old.members) != len(old.elements) or len(new.members) != len(new.elements):
        return None
    kind, family = _kind(new)
    gone, added = setdiff.diff(old.elements, new.elements, old.members, new.members)
    return setdiff.change(new.name, family, kind, gone, added, addrs_only=False)


def _kind(named: render_nft.NamedSet) -> tuple[str, int]:
    """The `protocol.SetChange` kind and family of a tier set, by its type."""
    family = 6 if named.type.startswith("ipv6_addr") else 4
    if named.type.endswith(". nf_proto"):
        return "addrproto", family
    if named.type == "inet_proto . inet_service":
        return "services", family
    return "ports", family  # `<family>_addr . inet_proto . inet_service`
