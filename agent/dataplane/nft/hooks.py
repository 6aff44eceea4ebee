"""Which base chains of a namespace, other than podseg's own, could undo its egress decision.

Why: podseg *decides* a denied egress packet in its output chain (it marks the packet, and the
packet's conntrack entry) and *drops* it later, in the netdev egress hook of the pod's
interface (docs/architecture.md, "The nftables layout"). A pod with NET_ADMIN in its own
namespace can hook a chain of its own in between and clear the mark, or rewrite the packet
after podseg judged it, without touching podseg's tables: the drift digest of podseg's tables
never sees it. Such chains are found here, from the kernel's JSON listing of every chain of the
namespace (`nft -j list chains`, headers only, no rules), and reported by the agent; while one
is there the agent drops that pod's denied egress in the output hook itself, where no later
chain can undo a drop (`agent.sync.pod.interfaces`).

A foreign base chain *could undo* the decision when it can run after it on the packet's way out:

* an `output` hook of family ip, ip6, inet or bridge at podseg's output priority or later (at
  equal priority the kernel runs the chain registered last first, so either order happens);
* a `postrouting` hook of those families, at any priority (postrouting follows output);
* a netdev `egress` hook on any interface of the namespace, at any priority (before podseg's
  drop it can clear the mark; after it, rewrite what podseg allowed).

Chains before podseg's output chain cannot undo it: they cannot skip a later chain (only a drop
is final) and podseg ORs its mark in after them. Pure: text in, descriptions out.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection

OUTPUT_PRIORITY = 0  # podseg's output chain: `priority filter`
IP_FAMILIES = frozenset({"ip", "ip6", "inet", "bridge"})

# What podseg owns: whole tables (nftables backend), or single built-in chains that the
# iptables backend jumps from (its `PODSEG-*` chains live in iptables-nft's `filter` tables).
Owned = frozenset[tuple[str, ...]]  # (family, table) or (family, table, chain)
NFT_OWNED: Owned = frozenset({("inet", "podseg"), ("netdev", "podseg")})
IPT_OWNED: Owned = NFT_OWNED | frozenset(
    (family, "filter", chain)
    for family in ("ip", "ip6")
    for chain in ("INPUT", "FORWARD", "OUTPUT")
)


@dataclasses.dataclass(frozen=True)
class BaseChain:
    family: str
    table: str
    name: str
    hook: str
    priority: int
    type: str = "filter"

    def describe(self) -> str:
        return (
            f"{self.family} {self.table} {self.name}: {self.type} hook {self.hook} "
            f"priority {self.priority}"
        )


def base_chains(listing: str) -> list[BaseChain]:
    """The hooked chains of an `nft -j list chains` listing (unhooked chains are skipped);
    ValueError when the text is not such a listing."""
    try:
        items = json.loads(listing or "{}").get("nftables", [])
    except (AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not an nft JSON listing: {exc}") from exc
    found = []
    for item in items if isinstance(items, list) else ():
        chain = item.get("chain") if isinstance(item, dict) else None
        if not isinstance(chain, dict) or "hook" not in chain:
            continue
        try:
            found.append(
                BaseChain(
                    str(chain["family"]),
                    str(chain["table"]),
                    str(chain["name"]),
                    str(chain["hook"]),
                    int(chain.get("prio", 0)),
                    str(chain.get("type", "filter")),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue  # a chain nft describes oddly is not one we can judge; skip it
    return found


def owned(chain: BaseChain, ours: Collection[tuple[str, ...]]) -> bool:
    return (chain.family, chain.table) in ours or (chain.family, chain.table, chain.name) in ours


def could_undo(chain: BaseChain) -> bool:
    """Whether `chain` (not ours) can run after podseg's egress decision (module docstring)."""
    if chain.family == "netdev":
        return chain.hook == "egress"
    if chain.family not in IP_FAMILIES:
        return False
    return chain.hook == "postrouting" or (
        chain.hook == "output" and chain.priority >= OUTPUT_PRIORITY
    )


def foreign(listing: str, ours: Collection[tuple[str, ...]] = NFT_OWNED) -> tuple[str, ...]:
    """Descriptions of the base chains in `listing` that are not ours and could undo podseg's
    egress decision, sorted (so equal findings compare equal)."""
    return tuple(
        sorted(
            chain.describe()
            for chain in base_chains(listing)
            if not owned(chain, ours) and could_undo(chain)
        )
    )
