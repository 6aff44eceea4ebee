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

from agent.calc import ruleset
from agent.dataplane.nft import fastpatch, incremental
from agent.dataplane.nft import render as render_nft
from tests.support import peerchanges

IFACES = ("eth0",)


def _check(old_rs: ruleset.PodRuleset, new_rs: ruleset.PodRuleset) -> fastpatch.Derived | None:
    old = render_nft.render(old_rs, IFACES)
    new = render_nft.render(new_rs, IFACES)
    derived = fastpatch.derive(old_rs, old, new_rs, IFACES)
    if derived is None:
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
    for old, new in peerchanges.walk(seed):
        assert _check(old, new) is not None


@pytest.mark.parametrize("seed", range(4))
def test_derived_patch_equals_render_then_diff_along_calculator_walks(seed: int) -> None:
    derived = sum(_check(old, new) is not None for old, new in peerchanges.calculator_walk(seed))
    assert derived > 20
