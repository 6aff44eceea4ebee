"""The element patch derived from a ruleset change (`nft.fastpatch`) against render-then-diff:
on random canonical peer sets (IPv4 and IPv6, any-port and port elements, per-policy counting
sets; elements shared by identity as the calculator shares them, or only equal), and on the
consecutive rulesets of random walks of the incremental calculator, the derived rendering is
exactly `render` of the new ruleset and the derived transaction exactly
`incremental.patch` of the two renderings; a change of anything but peer-set elements is
left to the render path."""

from __future__ import annotations

import dataclasses
import random

import pytest

from agent.calc import intervals, ruleset
from agent.dataplane.nft import fastpatch, incremental
from agent.dataplane.nft import render as render_nft
from tests.support import peerchanges

IFACES = ("eth0",)


def _check(old_rs: ruleset.PodRuleset, new_rs: ruleset.PodRuleset) -> fastpatch.Derived | None:
    old = render_nft.render(old_rs, IFACES)
    new = render_nft.render(new_rs, IFACES)
    derived = fastpatch.derive(old_rs, old, new_rs, IFACES)
    if derived is None:
        if fastpatch.same_frame(old_rs, new_rs):
            # only peers changed: left to the render path only when a whole port spec came
            # or went, so that the skeleton (its sets, chains, verdict map) changed
            assert old.shape != new.shape
        return None
    assert derived.rendered == new
    members = [[s.members for s in t.sets] for t in derived.rendered.tables]
    assert members == [[s.members for s in t.sets] for t in new.tables]
    assert derived.script == incremental.patch(old, new)
    assert (derived.deleted, derived.added) == incremental.counts(old, new)
    return derived


def test_anything_but_peer_elements_is_left_to_the_render_path() -> None:
    rng = random.Random(1)
    rs = peerchanges.peer_ruleset(rng, peerchanges.pieces(rng, 10), 5)
    old = render_nft.render(rs, IFACES)
    others = [
        dataclasses.replace(rs, mode=ruleset.PolicyMode.VISIBILITY),
        dataclasses.replace(rs, quarantine=ruleset.Quarantine()),
        dataclasses.replace(rs, ingress=dataclasses.replace(rs.ingress, policies=("x/a",))),
        dataclasses.replace(rs, egress=ruleset.DirectionRuleset()),
        dataclasses.replace(rs, anti_spoof=ruleset.AntiSpoof(peerchanges.addrs(rng, 1)[:1])),  # type: ignore[arg-type]
    ]
    for other in others:
        assert fastpatch.derive(rs, old, other, IFACES) is None
    # other interfaces, or a rendering that is not the old ruleset's
    assert fastpatch.derive(rs, old, rs, ("eth0", "net1")) is None
    smaller = peerchanges.peer_ruleset(rng, peerchanges.pieces(rng, 3), 1)
    assert fastpatch.derive(rs, render_nft.render(smaller, IFACES), smaller, IFACES) in (
        None,
        fastpatch.derive(smaller, render_nft.render(smaller, IFACES), smaller, IFACES),
    )
    # the same ruleset: the same rendering, no transaction
    same = fastpatch.derive(rs, old, rs, IFACES)
    assert same is not None and same.rendered == old and same.script == ""


@pytest.mark.parametrize("seed", range(40))
def test_derived_patch_equals_render_then_diff_on_random_peer_changes(seed: int) -> None:
    # these walks bring and take whole port specs often (overlapping ranges merged per
    # address run): each step is derived, or left to the render path with a new skeleton
    for old, new in peerchanges.walk(seed):
        _check(old, new)


@pytest.mark.parametrize("seed", range(10))
def test_peer_changes_on_the_same_port_specs_are_always_derived(seed: int) -> None:
    """Broad peers: address runs come, go, split and merge on ports every step keeps (an
    anchor peer holds each spec): every step is an element patch of address sets."""
    rng = random.Random(seed)
    specs = [(6, 8080, 8080), (17, 53, 53), (6, 1000, 2000)]
    anchors = [
        (ruleset.AddrRange(4, 0xC613_0000 + n, 0xC613_0000 + n), *spec)
        for n, spec in enumerate(specs)
    ]
    runs = [
        (ruleset.AddrRange(4, 0xC612_0000 + 4 * n, 0xC612_0000 + 4 * n + rng.randrange(4)), spec)
        for n in range(200)
        for spec in [rng.choice(specs)]
    ]

    def rs_of(chosen: list[tuple[ruleset.AddrRange, tuple[int, int, int]]]) -> ruleset.PodRuleset:
        triples = [(a, p, ruleset.PortRange(lo, hi)) for a, (p, lo, hi) in chosen]
        triples += [(a, p, ruleset.PortRange(lo, hi)) for a, p, lo, hi in anchors]
        ports = intervals.canonical_peer_ports(triples, exclude=())
        d = ruleset.DirectionRuleset(
            True, (), ports, ("x/a",), (ruleset.PolicyPeers("x/a", (), ports),)
        )
        return ruleset.PodRuleset("x", "web", ingress=d)

    chosen = rng.sample(runs, 100)
    old = rs_of(chosen)
    for _ in range(30):
        if rng.random() < 0.5:
            chosen.pop(rng.randrange(len(chosen)))
        else:
            chosen.append(rng.choice(runs))
        new = rs_of(chosen)
        derived = _check(old, new)
        assert derived is not None
        assert all(c.kind in ("any", "exact") for c in derived.changes)
        assert not any("exact" in c.name for c in derived.changes if c.kind == "any")
        old = new


@pytest.mark.parametrize("seed", range(4))
def test_derived_patch_equals_render_then_diff_along_calculator_walks(seed: int) -> None:
    derived = sum(_check(old, new) is not None for old, new in peerchanges.calculator_walk(seed))
    assert derived > 20


@pytest.mark.parametrize("seed", range(6))
def test_renderings_derived_from_derived_ones_keep_a_fresh_renderings_fingerprint(
    seed: int,
) -> None:
    """As the agent keeps them: each step derived from the last step's rendering (itself
    derived when it could be), never from a fresh one; the fingerprint, the pieces' digests
    and the script stay those of a fresh rendering of the step's ruleset."""
    walks = [peerchanges.walk(seed), peerchanges.walk(100 + seed)]
    derived = 0
    for steps in [*walks, peerchanges.calculator_walk(seed)]:
        kept: dict[tuple[str, str], render_nft.Rendered] = {}
        for old_rs, new_rs in steps:
            key = (old_rs.namespace, old_rs.pod)
            held = kept.get(key) or render_nft.render(old_rs, IFACES)
            found = fastpatch.derive(old_rs, held, new_rs, IFACES)
            fresh = render_nft.render(new_rs, IFACES)
            if found is not None:
                derived += 1
                assert found.rendered.fingerprint == fresh.fingerprint
                assert found.rendered.digests == fresh.digests
                assert found.rendered.script == fresh.script
            kept[key] = fresh if found is None else found.rendered
    assert derived > 20
