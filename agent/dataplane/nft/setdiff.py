"""The element difference of one set, in the two forms a derived patch sends: texts for a
libnftables transaction and numbers for a netlink batch (`agent.dataplane.nft.setelem`).

Why one module: the peer-set patch (`fastpatch`), the admin-tier patch (`tierpatch`) and the
text patch of two renderings (`incremental`) all turn a set's elements before and after into
the elements deleted and added. They compare by text, which is one-to-one with the canonical
elements a render writes, and keep each text's element for its numbers.

Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.calc import ruleset
from agent.dataplane import protocol

# An element as rendered text and the ruleset element it came from.
Pair = tuple[str, Any]
# (texts deleted, texts added, the same change as numbers)
Change = tuple[list[str], list[str], protocol.SetChange]


def diff(
    old: Sequence[str], new: Sequence[str], old_members: Sequence[Any], new_members: Sequence[Any]
) -> tuple[list[Pair], list[Pair]]:
    """The elements of `old` not in `new` and those of `new` not in `old`, in their order,
    each with its member (`*_members` run parallel to the texts)."""
    before, after = set(old), set(new)
    gone = [(t, m) for t, m in zip(old, old_members, strict=True) if t not in after]
    added = [(t, m) for t, m in zip(new, new_members, strict=True) if t not in before]
    return gone, added


def change(
    name: str, family: int, kind: str, gone: list[Pair], added: list[Pair], *, addrs_only: bool
) -> Change:
    """`diff`'s result as the texts and the `protocol.SetChange` of set `name`. `addrs_only`:
    the set holds the addresses of `PeerPort` elements (a port spec's address set)."""
    return (
        [t for t, _ in gone],
        [t for t, _ in added],
        protocol.SetChange(
            name,
            family,
            kind,
            tuple(numbers(m, addrs_only=addrs_only) for _, m in gone),
            tuple(numbers(m, addrs_only=addrs_only) for _, m in added),
        ),
    )


def numbers(member: Any, *, addrs_only: bool = False) -> tuple[int, ...]:
    """A set element as the integers `protocol.SetChange` carries."""
    if isinstance(member, ruleset.AddrRange):
        return (member.first, member.last)
    if isinstance(member, ruleset.ProtoPorts):
        return (member.protocol, member.ports.first, member.ports.last)
    e: ruleset.PeerPort = member
    if addrs_only:
        return (e.addrs.first, e.addrs.last)
    return (e.addrs.first, e.addrs.last, e.protocol, e.ports.first, e.ports.last)
