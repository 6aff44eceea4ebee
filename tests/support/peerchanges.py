"""Random changes of a pod's peer elements, for the tests of the element patches derived from
them (`agent.dataplane.nft.fastpatch`, `agent.dataplane.ipt.fastpatch`): canonical peer sets
of two policies (IPv4 and IPv6, any-port and port elements, single ports and ranges), changed a
few pieces at a time, with elements shared by identity as the calculator shares them or only
equal; and the consecutive rulesets of the local pods of random small clusters fed change by
change to the incremental calculator."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator

from agent.calc import incremental as calc_incremental
from agent.calc import intervals, ruleset
from tests.support import randomcluster


def addrs(rng: random.Random, n: int) -> list[ruleset.AddrRange]:
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


def pieces(
    rng: random.Random, n: int
) -> list[tuple[ruleset.AddrRange, int, int, int] | ruleset.AddrRange]:
    out: list[tuple[ruleset.AddrRange, int, int, int] | ruleset.AddrRange] = []
    for a in addrs(rng, n):
        if rng.random() < 0.3:
            out.append(a)
        else:
            first = rng.choice((80, 81, 443, 8080))
            # single ports mostly; short ranges (expanded by iptables), longer ones (a set each)
            span = rng.choice((0, 0, 0, 1, 5, 20, 40))
            out.append((a, rng.choice((6, 17)), first, first + span))
    return out


def peer_ruleset(
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


def shared(old: ruleset.PodRuleset, new: ruleset.PodRuleset) -> ruleset.PodRuleset:
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


def walk(seed: int) -> Iterator[tuple[ruleset.PodRuleset, ruleset.PodRuleset]]:
    """(before, after) of a random walk of peer changes: mostly a few pieces, sometimes
    shared by identity."""
    rng = random.Random(seed)
    union = pieces(rng, rng.randrange(0, 40))
    split = rng.randrange(len(union) + 1)
    rs = peer_ruleset(rng, union, split)
    for _ in range(12):
        for _ in range(rng.randrange(1, 4)):  # remove, add or move a few pieces
            if union and rng.random() < 0.4:
                union.pop(rng.randrange(len(union)))
                split = min(split, len(union))
            else:
                union.insert(rng.randrange(len(union) + 1), pieces(rng, 1)[0])
        new_rs = peer_ruleset(rng, union, min(split, len(union)))
        if rng.random() < 0.7:
            new_rs = shared(rs, new_rs)
        yield rs, new_rs
        rs = new_rs


def calculator_walk(seed: int) -> Iterator[tuple[ruleset.PodRuleset, ruleset.PodRuleset]]:
    """(before, after) of every local pod whose ruleset changed, along a random walk of a
    small cluster (tests/support/randomcluster): mostly remote pods relabelled or re-addressed,
    some namespace relabels and policy edits."""
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
            if old is not None and old is not result.ruleset:
                yield old, result.ruleset
            before[key] = result.ruleset
