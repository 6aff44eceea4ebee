"""`verdict.removes_allows` answers exactly like its pairwise (quadratic) reference over random
rulesets: canonical ones as the compiler makes them and arbitrary (unsorted, overlapping) ones."""

from __future__ import annotations

import random

from agent.calc import intervals, ruleset, verdict

A = ruleset.AddrRange
P = ruleset.PortRange
PP = ruleset.PeerPort


def _random_addrs(rnd: random.Random, n: int) -> list[ruleset.AddrRange]:
    out = []
    for _ in range(n):
        first = rnd.randrange(64)
        out.append(A(rnd.choice((4, 4, 6)), first, first + rnd.choice((0, 0, 1, 3, 20))))
    return out


def _random_port_peers(rnd: random.Random, n: int) -> list[ruleset.PeerPort]:
    out = []
    for addrs in _random_addrs(rnd, n):
        port = rnd.choice((80, 81, 443, rnd.randrange(1, 100)))
        if rnd.random() < 0.05:  # degenerate (empty) ranges: answered like the reference too
            out.append(PP(A(addrs.family, addrs.last + 1, addrs.first), 6, P(port + 1, port)))
            continue
        out.append(PP(addrs, rnd.choice((6, 6, 17, 132)), P(port, port + rnd.choice((0, 0, 1, 9)))))
    return out


def _direction(rnd: random.Random, canonical: bool) -> ruleset.DirectionRuleset:
    if rnd.random() < 0.1:
        return ruleset.DirectionRuleset()
    any_port = _random_addrs(rnd, rnd.choice((0, 0, 1, 3)))
    port_peers = _random_port_peers(rnd, rnd.randrange(0, 25))
    if canonical:
        merged = intervals.merge_addrs(any_port)
        return ruleset.DirectionRuleset(
            isolated=True,
            any_port_peers=merged,
            port_peers=intervals.canonical_peer_ports(
                ((e.addrs, e.protocol, e.ports) for e in port_peers), exclude=merged
            ),
        )
    rnd.shuffle(port_peers)
    return ruleset.DirectionRuleset(
        isolated=True, any_port_peers=tuple(any_port), port_peers=tuple(port_peers)
    )


def _mutated(rnd: random.Random, d: ruleset.DirectionRuleset) -> ruleset.DirectionRuleset:
    """`d` with a few elements dropped, added, widened or narrowed (an event's small change)."""
    if not d.isolated or rnd.random() < 0.1:
        return d
    peers = list(d.port_peers)
    for _ in range(rnd.randrange(0, 3)):
        what = rnd.random()
        if peers and what < 0.3:
            peers.pop(rnd.randrange(len(peers)))
        elif peers and what < 0.6:
            i = rnd.randrange(len(peers))
            e = peers[i]
            grow = rnd.choice((-1, 1))
            peers[i] = PP(
                e.addrs, e.protocol, P(e.ports.first, max(e.ports.first, e.ports.last + grow))
            )
        elif peers and what < 0.8:
            i = rnd.randrange(len(peers))
            e = peers[i]
            peers[i] = PP(A(e.addrs.family, e.addrs.first, e.addrs.last + 1), e.protocol, e.ports)
        else:
            peers.extend(_random_port_peers(rnd, 1))
    any_port = list(d.any_port_peers)
    if rnd.random() < 0.2:
        any_port.extend(_random_addrs(rnd, 1))
    if any_port and rnd.random() < 0.1:
        any_port.pop()
    return ruleset.DirectionRuleset(
        isolated=True,
        any_port_peers=intervals.merge_addrs(any_port),
        port_peers=intervals.canonical_peer_ports(
            ((e.addrs, e.protocol, e.ports) for e in peers), exclude=intervals.merge_addrs(any_port)
        ),
    )


def _rs(ingress: ruleset.DirectionRuleset, egress: ruleset.DirectionRuleset) -> ruleset.PodRuleset:
    return ruleset.PodRuleset("ns", "pod", ingress=ingress, egress=egress)


def test_removes_allows_equals_the_pairwise_reference_on_random_rulesets() -> None:
    rnd = random.Random(88)
    answers = {True: 0, False: 0}
    for _ in range(3000):
        canonical = rnd.random() < 0.7
        old = _rs(_direction(rnd, canonical), _direction(rnd, canonical))
        if canonical and rnd.random() < 0.8:
            new = _rs(_mutated(rnd, old.ingress), _mutated(rnd, old.egress))
        else:
            new = _rs(_direction(rnd, canonical), _direction(rnd, canonical))
        want = verdict._removes_allows_reference(old, new)
        assert verdict.removes_allows(old, new) == want, (old, new)
        answers[want] += 1
    assert min(answers.values()) > 300  # both answers are well exercised


def test_unchanged_and_widened_port_peers_remove_nothing() -> None:
    a, b = A(4, 10, 10), A(4, 20, 20)
    old = ruleset.DirectionRuleset(
        isolated=True, port_peers=(PP(a, 6, P(80, 80)), PP(b, 6, P(80, 80)))
    )
    same = ruleset.DirectionRuleset(
        isolated=True, port_peers=(PP(a, 6, P(80, 80)), PP(b, 6, P(80, 80)))
    )
    wider = ruleset.DirectionRuleset(isolated=True, port_peers=(PP(A(4, 10, 20), 6, P(79, 81)),))
    gone = ruleset.DirectionRuleset(isolated=True, port_peers=(PP(a, 6, P(80, 80)),))
    other_proto = ruleset.DirectionRuleset(
        isolated=True, port_peers=(PP(A(4, 10, 20), 17, P(80, 80)),)
    )
    plain = ruleset.DirectionRuleset()
    assert not verdict.removes_allows(_rs(old, plain), _rs(same, plain))
    assert not verdict.removes_allows(_rs(old, plain), _rs(wider, plain))
    assert verdict.removes_allows(_rs(old, plain), _rs(gone, plain))
    assert verdict.removes_allows(_rs(old, plain), _rs(other_proto, plain))
    # An element covered only by an earlier, longer range (not the nearest start) still counts.
    long_first = ruleset.DirectionRuleset(
        isolated=True,
        port_peers=(PP(A(4, 0, 100), 6, P(80, 80)), PP(A(4, 15, 15), 6, P(80, 80))),
    )
    assert not verdict.removes_allows(_rs(old, plain), _rs(long_first, plain))


def test_degenerate_elements_are_judged_like_the_reference() -> None:
    """An element with an empty port or address range (never compiled, but possible input)
    counts as covered exactly when the pairwise comparison says so."""
    plain = ruleset.DirectionRuleset()
    wide = ruleset.DirectionRuleset(isolated=True, port_peers=(PP(A(4, 0, 100), 6, P(80, 81)),))
    for odd in (
        PP(A(4, 10, 10), 6, P(81, 80)),  # ports backwards, inside the wide element's bounds
        PP(A(4, 11, 10), 6, P(80, 80)),  # addresses backwards
        PP(A(4, 11, 10), 6, P(82, 79)),  # both, outside the port bounds
    ):
        old = ruleset.DirectionRuleset(isolated=True, port_peers=(odd,))
        for new in (wide, old, ruleset.DirectionRuleset(isolated=True)):
            want = verdict._removes_allows_reference(_rs(old, plain), _rs(new, plain))
            assert verdict.removes_allows(_rs(old, plain), _rs(new, plain)) == want, (odd, new)
