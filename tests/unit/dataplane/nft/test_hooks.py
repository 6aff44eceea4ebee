"""Which base chains of others could undo podseg's egress decision, judged from the kernel's
JSON listing of a namespace's chains: those that can run after the output chain's decision
(output at its priority or later, postrouting, netdev egress), never podseg's own, never chains
that run before it or on the way in."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.dataplane.nft import hooks


def listing(*chains: dict[str, Any]) -> str:
    items: list[dict[str, Any]] = [{"metainfo": {"version": "1.0.6"}}]
    items += [{"chain": {"handle": n + 1, "policy": "accept", **c}} for n, c in enumerate(chains)]
    return json.dumps({"nftables": items})


def chain(family: str, table: str, name: str, hook: str | None = None, prio: int = 0) -> Any:
    base = {"family": family, "table": table, "name": name}
    return base if hook is None else {**base, "type": "filter", "hook": hook, "prio": prio}


OURS = (
    chain("inet", "podseg", "input", "input"),
    chain("inet", "podseg", "output", "output"),
    chain("inet", "podseg", "egress_policy"),
    chain("netdev", "podseg", "egress_eth0", "egress"),
)


@pytest.mark.parametrize(
    "foreign",
    [
        chain("inet", "evil", "post", "postrouting", -300),
        chain("ip", "mangle", "POSTROUTING", "postrouting", -150),
        chain("ip6", "evil", "out", "output", 0),  # equal priority: either order happens
        chain("inet", "evil", "late", "output", 10),
        chain("bridge", "evil", "out", "output", 100),
        chain("netdev", "evil", "early", "egress", -10),
        chain("netdev", "evil", "late", "egress", 10),
        chain("ip", "filter", "OUTPUT", "output", 0),  # iptables-nft, with the nft backend
    ],
)
def test_a_chain_that_can_run_after_the_decision_is_foreign(foreign: dict[str, Any]) -> None:
    found = hooks.foreign(listing(*OURS, foreign))
    assert found == (
        f"{foreign['family']} {foreign['table']} {foreign['name']}: filter hook "
        f"{foreign['hook']} priority {foreign['prio']}",
    )


@pytest.mark.parametrize(
    "harmless",
    [
        chain("inet", "evil", "early", "output", -1),  # runs before: podseg ORs its mark in later
        chain("ip", "nat", "OUTPUT", "output", -100),
        chain("inet", "evil", "in", "input", 10),
        chain("inet", "evil", "pre", "prerouting", 0),
        chain("netdev", "evil", "in", "ingress", 0),
        chain("arp", "evil", "out", "output", 0),
        chain("inet", "evil", "regular"),  # not hooked: runs only when jumped to
    ],
)
def test_chains_that_cannot_undo_the_egress_decision_are_not_reported(
    harmless: dict[str, Any],
) -> None:
    assert hooks.foreign(listing(*OURS, harmless)) == ()


def test_the_iptables_backend_owns_the_built_in_filter_chains_only() -> None:
    ipt_ours = chain("ip", "filter", "OUTPUT", "output", 0)
    stranger = chain("ip", "filter", "SNEAKY", "postrouting", 0)
    text = listing(*OURS, ipt_ours, stranger)
    assert hooks.foreign(text, hooks.IPT_OWNED) == (
        "ip filter SNEAKY: filter hook postrouting priority 0",
    )


def test_findings_are_sorted_and_odd_chains_are_skipped() -> None:
    odd = {"family": "inet", "table": "x", "name": "y", "hook": "output", "prio": "high"}
    text = listing(chain("netdev", "b", "e", "egress"), chain("inet", "a", "p", "postrouting"), odd)
    assert hooks.foreign(text) == (
        "inet a p: filter hook postrouting priority 0",
        "netdev b e: filter hook egress priority 0",
    )
    assert hooks.foreign("") == ()
    with pytest.raises(ValueError):
        hooks.foreign("not json")
