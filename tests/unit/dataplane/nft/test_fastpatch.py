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

from agent.calc import incremental as calc_incremental
from agent.calc import intervals, ruleset
from agent.dataplane.nft import fastpatch, incremental
from agent.dataplane.nft import render as render_nft
from tests.support import randomcluster

IFACES = ("eth0",)


def _addrs(rng: random.Random, n: int) -> list[ruleset.AddrRange]:
    out = []
    for _ in range(n):
        family = rng.choice((4, 4, 6))
        base = 0xC612_0000 if family == 4 else 0xFD00 << 112
        first = base + rng.randrange(64)
        out.append(ruleset.AddrRange(family, first, first + rng.choice((0, 0, 0, 1, 3, 7))))
    return out


def _peers(
    rng: random.Random, pieces: list[tuple[ruleset.AddrRange, int, int, int] | ruleset.AddrRange]
) -> tuple[tuple[ruleset.AddrRange, ...], tuple[ruleset.PeerPort, ...]]:
    anyport = intervals.merge_addrs(p for p in pieces if isinstance(p, ruleset.AddrRange))
    triples = [
        (p[0], p[1], ruleset.PortRange(p[2], p[3]))
        for p in pieces
        if not isinstance(p, ruleset.AddrRange)
    ]
    return anyport, intervals.canonical_peer_ports(triples, exclude=anyport)


def _pieces(
    rng: random.Random, n: int
) -> list[tuple[ruleset.AddrRange, int, int, int] | ruleset.AddrRange]:
    out: list[tuple[ruleset.AddrRange, int, int, int] | ruleset.AddrRange] = []
    for a in _addrs(rng, n):
        if rng.random() < 0.3:
            out.append(a)
        else:
            first = rng.choice((80, 81, 443, 8080))
            out.append((a, rng.choice((6, 17)), first, first + rng.choice((0, 0, 1, 5))))
    return out


def _ruleset(
    rng: random.Random,
    union: list[tuple[ruleset.AddrRange, int, int, int] | ruleset.AddrRange],
    split: int,
) -> ruleset.PodRuleset:
    """Two policies (the pieces before and after `split`) isolating ingress, one egress."""
    a_any, a_ports = _peers(rng, union[:split])
    b_any, b_ports = _peers(rng, union[split:])
    u_any, u_ports = _peers(rng, union)
    ingress = ruleset.DirectionRuleset(
        True,
        u_any,
        u_ports,
        ("x/a", "x/b"),
        (ruleset.PolicyPeers("x/a", a_any, a_ports), ruleset.PolicyPeers("x/b", b_any, b_ports)),
    )
    egress = ruleset.DirectionRuleset(
        True, b_any, b_ports, ("x/b",), (ruleset.PolicyPeers("x/b", b_any, b_ports),)
    )
    return ruleset.PodRuleset("x", "web", ingress, egress)


def _shared(old: ruleset.PodRuleset, new: ruleset.PodRuleset) -> ruleset.PodRuleset:
    """`new` with every element equal to one of `old` replaced by that very object."""
    pool: dict[object, object] = {}
    for d in (old.ingress, old.egress):
        for items in (d.any_port_peers, d.port_peers):
            pool.update((e, e) for e in items)
        for p in d.per_policy:
            pool.update((e, e) for e in (*p.any_port_peers, *p.port_peers))

    def same(items: tuple[object, ...]) -> tuple[object, ...]:
        return tuple(pool.get(e, e) for e in items)

    def direction(d: ruleset.DirectionRuleset) -> ruleset.DirectionRuleset:
        return dataclasses.replace(
            d,
            any_port_peers=same(d.any_port_peers),  # type: ignore[arg-type]
            port_peers=same(d.port_peers),  # type: ignore[arg-type]
            per_policy=tuple(
                ruleset.PolicyPeers(p.policy, same(p.any_port_peers), same(p.port_peers))  # type: ignore[arg-type]
                for p in d.per_policy
            ),
        )

    return dataclasses.replace(new, ingress=direction(new.ingress), egress=direction(new.egress))


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


@pytest.mark.parametrize("seed", range(40))
def test_derived_patch_equals_render_then_diff_on_random_peer_changes(seed: int) -> None:
    rng = random.Random(seed)
    union = _pieces(rng, rng.randrange(0, 40))
    split = rng.randrange(len(union) + 1)
    rs = _ruleset(rng, union, split)
    for _ in range(12):
        for _ in range(rng.randrange(1, 4)):  # remove, add or move a few pieces
            roll = rng.random()
            if union and roll < 0.4:
                union.pop(rng.randrange(len(union)))
                split = min(split, len(union))
            else:
                union.insert(rng.randrange(len(union) + 1), _pieces(rng, 1)[0])
        new_rs = _ruleset(rng, union, min(split, len(union)))
        if rng.random() < 0.7:
            new_rs = _shared(rs, new_rs)
        assert _check(rs, new_rs) is not None
        rs = new_rs


def test_anything_but_peer_elements_is_left_to_the_render_path() -> None:
    rng = random.Random(1)
    rs = _ruleset(rng, _pieces(rng, 10), 5)
    old = render_nft.render(rs, IFACES)
    others = [
        dataclasses.replace(rs, mode=ruleset.PolicyMode.VISIBILITY),
        dataclasses.replace(rs, quarantine=ruleset.Quarantine()),
        dataclasses.replace(rs, ingress=dataclasses.replace(rs.ingress, policies=("x/a",))),
        dataclasses.replace(rs, egress=ruleset.DirectionRuleset()),
        dataclasses.replace(rs, anti_spoof=ruleset.AntiSpoof(_addrs(rng, 1)[:1])),  # type: ignore[arg-type]
    ]
    for other in others:
        assert fastpatch.derive(rs, old, other, IFACES) is None
    # other interfaces, or a rendering that is not the old ruleset's
    assert fastpatch.derive(rs, old, rs, ("eth0", "net1")) is None
    smaller = _ruleset(rng, _pieces(rng, 3), 1)
    assert fastpatch.derive(rs, render_nft.render(smaller, IFACES), smaller, IFACES) in (
        None,
        fastpatch.derive(smaller, render_nft.render(smaller, IFACES), smaller, IFACES),
    )
    # the same ruleset: the same rendering, no transaction
    same = fastpatch.derive(rs, old, rs, IFACES)
    assert same is not None and same.rendered == old and same.script == ""


@pytest.mark.parametrize("seed", range(4))
def test_derived_patch_equals_render_then_diff_along_calculator_walks(seed: int) -> None:
    """Random small clusters (tests/support/randomcluster), changed one pod, namespace or
    policy at a time (mostly remote pods: relabels, new addresses), through the incremental
    calculator; every local pod's consecutive rulesets."""
    rnd = random.Random(1000 + seed)
    calc = calc_incremental.Calculator("node-1")
    for node in randomcluster.NODES:
        calc.set_node(node.name, node)
    for i in range(3):
        calc.set_namespace(f"ns{i}", randomcluster.namespace(rnd, i))
    for i in range(40):
        pod = randomcluster.pod(rnd, i)
        calc.set_pod(pod.key, pod)
    for i in range(6):
        policy = randomcluster.policy(rnd, i)
        calc.set_policy(policy.key, policy)
    before = {k: d.ruleset for k, d in calc.flush().items() if d is not None}
    derived = 0
    for _ in range(150):
        roll = rnd.random()
        if roll < 0.85:
            pod = randomcluster.pod(rnd, rnd.randrange(40))
            calc.set_pod(pod.key, pod if rnd.random() < 0.9 else None)
        elif roll < 0.93:
            i = rnd.randrange(3)
            calc.set_namespace(f"ns{i}", randomcluster.namespace(rnd, i))
        else:
            policy = randomcluster.policy(rnd, rnd.randrange(6))
            calc.set_policy(policy.key, policy)
        for key, result in calc.flush().items():
            old = before.pop(key, None)
            if result is None:
                continue
            if old is not None:
                derived += _check(old, result.ruleset) is not None
            before[key] = result.ruleset
    assert derived > 20
