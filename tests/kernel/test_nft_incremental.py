"""Incremental set-element updates against the real kernel.

Property: for a random walk of rulesets, applying each step as the incremental patch (when the
skeleton allows it) leaves exactly what a fresh full apply of the same ruleset leaves. Compared
on nft's JSON listing with rule handles removed and each set's elements sorted (a concatenated
interval set lists its elements in insertion order, which differs between the two ways of
getting there; membership must not). Interval sets stay disjoint through every step: the
kernel refuses an overlapping element, so any overlap would fail the transaction.

Namespaces `psg-<random>-inc*`, deleted by the fixture.
"""

from __future__ import annotations

import random

import pytest

from agent.calc import intervals, ruleset
from agent.dataplane.nft import incremental
from agent.dataplane.nft import render as render_nft
from testbed.sandbox import tables
from tests.support import kernel


def _addr(rng: random.Random, family: int) -> ruleset.AddrRange:
    return kernel.random_addr_range(rng, family, single=0.5, aligned=0.3)


# The port ranges of the walk: ranges of different starts never overlap, so merged port sets
# give ranges of the same list. A port spec (protocol, ports) that comes or goes changes the
# skeleton (its sets and chain): each is held by an anchor peer, on addresses no random peer
# covers, so that the walk's steps are mostly element patches.
PORTS = [(first, first + span) for first in (53, 80, 443, 8000) for span in (0, 1, 20)]
PORTS.append((8000, 8500))
ANCHORS = [
    (
        ruleset.AddrRange(4, kernel.V4_BASE + (1 << 13) + n, kernel.V4_BASE + (1 << 13) + n),
        proto,
        ruleset.PortRange(*PORTS[n // 3]),
    )
    for n, proto in enumerate([6, 17, 132] * len(PORTS))
]


def _ports(rng: random.Random) -> ruleset.PortRange:
    return ruleset.PortRange(*rng.choice(PORTS))


Raw = tuple[list[ruleset.AddrRange], list[intervals.Triple]]


def _raw(rng: random.Random, n: int) -> Raw:
    anys = [_addr(rng, rng.choice([4, 6])) for _ in range(rng.randrange(n))]
    triples = [
        (_addr(rng, rng.choice([4, 4, 6])), rng.choice([6, 17, 132]), _ports(rng))
        for _ in range(rng.randrange(n))
    ]
    return anys, triples


def _mutate(rng: random.Random, raw: Raw) -> Raw:
    """Keep most inputs, drop some, add some: neighbouring rulesets share most elements and
    ranges split and merge as inputs overlap."""
    anys = [a for a in raw[0] if rng.random() > 0.2]
    triples = [t for t in raw[1] if rng.random() > 0.2]
    more = _raw(rng, 6)
    return anys + more[0], triples + more[1]


def _direction(raw: Raw, isolated: bool) -> ruleset.DirectionRuleset:
    if not isolated:
        return ruleset.DirectionRuleset()
    anys = intervals.merge_addrs(raw[0])
    return ruleset.DirectionRuleset(
        isolated=True,
        any_port_peers=anys,
        port_peers=intervals.canonical_peer_ports(raw[1] + ANCHORS, exclude=anys),
        policies=("p/one",),
    )


def _ruleset(ingress: Raw, egress: Raw, shape: int) -> ruleset.PodRuleset:
    return ruleset.PodRuleset(
        "p",
        "web",
        ingress=_direction(ingress, shape != 1),
        egress=_direction(egress, shape != 2),
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_listing_equals_fresh_full_apply(two_netns: tuple[str, str], seed: int) -> None:
    patched_ns, fresh_ns = two_netns
    rng = random.Random(seed)
    ingress, egress = _raw(rng, 30), _raw(rng, 30)
    shape = 0
    previous = render_nft.render(_ruleset(ingress, egress, shape), ["eth0"])
    kernel.load(patched_ns, previous.script)
    patches = replaces = 0
    for _ in range(12):
        ingress, egress = _mutate(rng, ingress), _mutate(rng, egress)
        if rng.random() < 0.15:
            shape = rng.choice([0, 1, 2])  # a skeleton change: must fall back to a replace
        current = render_nft.render(_ruleset(ingress, egress, shape), ["eth0"])
        script = incremental.patch(previous, current)
        if script is None:
            assert current.shape != previous.shape
            kernel.load(patched_ns, current.script)
            replaces += 1
        else:
            kernel.load(patched_ns, script)
            patches += 1
        kernel.load(fresh_ns, current.script)
        assert tables.canonical_listing(patched_ns) == tables.canonical_listing(fresh_ns)
        listing = kernel.run(
            "ip", "netns", "exec", patched_ns, "nft", "list", "table", "inet", "podseg"
        )
        assert render_nft.parse_fingerprint(listing) == current.fingerprint
        previous = current
    assert patches >= 6, (patches, replaces)


def test_patch_onto_a_changed_table_fails_whole(two_netns: tuple[str, str]) -> None:
    """A patch assumes the table holds the old ruleset; if an element it deletes is missing,
    the transaction fails as a whole and the fingerprint stays the old one."""
    ns, _ = two_netns
    rng = random.Random(7)
    raw = _raw(rng, 10)
    raw[0].append(ruleset.AddrRange(4, kernel.V4_BASE + 5000, kernel.V4_BASE + 5000))
    old = render_nft.render(_ruleset(raw, raw, 0), ["eth0"])
    new = render_nft.render(_ruleset(([], raw[1]), raw, 0), ["eth0"])
    kernel.load(ns, old.script)
    kernel.load(ns, "flush set inet podseg ingress_any4\n")  # someone else's edit
    script = incremental.patch(old, new)
    assert script and "delete element inet podseg ingress_any4" in script
    with pytest.raises(AssertionError):
        kernel.load(ns, script)
    listing = kernel.run("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "podseg")
    assert render_nft.parse_fingerprint(listing) == old.fingerprint
