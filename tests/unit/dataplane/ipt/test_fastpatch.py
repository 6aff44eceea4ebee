"""The iptables element batch derived from a ruleset change (`ipt.fastpatch`) against
render-then-diff: on random peer changes (tests/support/peerchanges) and the consecutive
rulesets of calculator walks, the derived programme is exactly `render_ipt.render` of the new
ruleset (sets, rules, netdev table, fingerprint) and the batch exactly
`ipt.incremental.patch` of the two; the kept layout is what a fresh one would be; a set that
would appear or empty, or anything but peer elements, is left to the render path."""

from __future__ import annotations

import dataclasses
import random

import pytest

from agent.calc import ruleset
from agent.dataplane import protocol
from agent.dataplane.ipt import fastpatch, incremental
from agent.dataplane.ipt import render as render_ipt
from tests.support import peerchanges

IFACES = ("eth0",)


def _program(rs: ruleset.PodRuleset) -> tuple[protocol.IptProgram, str]:
    r = render_ipt.render(rs, IFACES)
    return protocol.IptProgram(ipset=r.ipset, v4=r.v4, v6=r.v6, netdev=r.netdev), r.fingerprint


def _check(old_rs: ruleset.PodRuleset, new_rs: ruleset.PodRuleset) -> bool:
    """Whether a patch was derived (checked against the render path when it was)."""
    old, old_fp = _program(old_rs)
    layout = fastpatch.layout_of(old_rs, old, IFACES)
    if layout is None:
        return False
    derived = fastpatch.derive(old_rs, old, old_fp, layout, new_rs, IFACES)
    new, new_fp = _program(new_rs)
    if derived is None:
        return False
    assert derived.program == new
    assert derived.fingerprint == new_fp
    assert derived.script == incremental.patch(old, old_fp, new, new_fp)
    assert derived.layout == fastpatch.layout_of(new_rs, new, IFACES)
    return True


@pytest.mark.parametrize("seed", range(40))
def test_derived_batch_equals_render_then_diff_on_random_peer_changes(seed: int) -> None:
    for old, new in peerchanges.walk(seed):
        _check(old, new)


def test_most_random_peer_changes_are_derived() -> None:
    pairs = [pair for seed in range(40) for pair in peerchanges.walk(seed)]
    assert sum(_check(old, new) for old, new in pairs) > len(pairs) // 3


@pytest.mark.parametrize("seed", range(4))
def test_derived_batch_equals_render_then_diff_along_calculator_walks(seed: int) -> None:
    derived = sum(_check(old, new) for old, new in peerchanges.calculator_walk(seed))
    assert derived > 10


def test_anything_but_peer_elements_is_left_to_the_render_path() -> None:
    rng = random.Random(1)
    rs = peerchanges.peer_ruleset(rng, peerchanges.pieces(rng, 10), 5)
    old, fp = _program(rs)
    layout = fastpatch.layout_of(rs, old, IFACES)
    assert layout is not None
    for other in (
        dataclasses.replace(rs, mode=ruleset.PolicyMode.VISIBILITY),
        dataclasses.replace(rs, quarantine=ruleset.Quarantine()),
        dataclasses.replace(rs, egress=ruleset.DirectionRuleset()),
    ):
        assert fastpatch.derive(rs, old, fp, layout, other, IFACES) is None
    assert fastpatch.derive(rs, old, fp, layout, rs, ("eth0", "net1")) is None
    same = fastpatch.derive(rs, old, fp, layout, rs, IFACES)
    assert same is not None and same.program == old and same.script == ""
    # every peer gone: the sets empty and their rules go
    empty = peerchanges.peer_ruleset(rng, [], 0)
    assert fastpatch.derive(rs, old, fp, layout, empty, IFACES) is None
