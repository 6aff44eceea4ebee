"""Random rulesets of any shape the renderers accept (unsorted, overlapping, every protocol,
quarantine, node guard, anti-spoofing and the facts of the pod's namespace, odd names and
interfaces), built directly and not through
`agent.calc`, so that only a renderer can change what they render to."""

from __future__ import annotations

import random

from agent.calc import ruleset


def _random_range(rnd: random.Random, family: int) -> ruleset.AddrRange:
    bits = 32 if family == 4 else 128
    first = rnd.choice((0, rnd.getrandbits(bits), 0xC6120000 + rnd.randrange(1 << 16)))
    kind = rnd.random()
    if kind < 0.5:
        return ruleset.AddrRange(family, first, first)
    if kind < 0.8:  # an exact prefix
        size = 1 << rnd.randrange(bits + 1)
        first -= first % size
        return ruleset.AddrRange(family, first, first + size - 1)
    return ruleset.AddrRange(family, first, min((1 << bits) - 1, first + rnd.randrange(1, 1000)))


def _random_direction(rnd: random.Random) -> ruleset.DirectionRuleset:
    if rnd.random() < 0.2:
        return ruleset.DirectionRuleset()
    any_port = tuple(
        sorted(_random_range(rnd, rnd.choice((4, 6))) for _ in range(rnd.randrange(4)))
    )
    port_peers: list[ruleset.PeerPort] = []
    for _ in range(rnd.randrange(30)):
        addrs = _random_range(rnd, rnd.choice((4, 4, 6)))
        for _ in range(rnd.choice((1, 1, 3))):
            port = rnd.randrange(1, 65000)
            protocol = rnd.choice((6, 17, 132, 99))
            port_peers.append(
                ruleset.PeerPort(
                    addrs, protocol, ruleset.PortRange(port, port + rnd.choice((0, 0, 7)))
                )
            )
    policies = sorted({f"ns/p{rnd.randrange(5)}" for _ in range(rnd.randrange(3))})
    return ruleset.DirectionRuleset(True, any_port, tuple(port_peers), tuple(policies))


def random_case(rnd: random.Random) -> tuple[ruleset.PodRuleset, tuple[str, ...]]:
    """A random ruleset (any shape the renderer accepts) and interfaces."""
    quarantine = guard = None
    if rnd.random() < 0.25:
        allowed = tuple(_random_range(rnd, rnd.choice((4, 6))) for _ in range(rnd.randrange(3)))
        quarantine = ruleset.Quarantine(allow_from=allowed)
    if rnd.random() < 0.3:
        guard = ruleset.NodeGuard(
            node_addrs=tuple(_random_range(rnd, rnd.choice((4, 6))) for _ in range(3)),
            ports=tuple(
                ruleset.ProtoPorts(
                    rnd.choice((6, 17)), ruleset.PortRange(p, p + rnd.choice((0, 9)))
                )
                for p in sorted(rnd.sample(range(1, 60000), rnd.randrange(3)))
            ),
            blocked=tuple(_random_range(rnd, 4) for _ in range(rnd.randrange(2))),
            scoped=tuple(("eth0", _random_range(rnd, 6)) for _ in range(rnd.randrange(2))),
        )
    anti_spoof = None
    if rnd.random() < 0.6:
        anti_spoof = ruleset.AntiSpoof(
            own=tuple(_random_range(rnd, rnd.choice((4, 6))) for _ in range(rnd.randrange(3))),
            link_local=tuple(_random_range(rnd, 6) for _ in range(rnd.randrange(2))),
        )
    link = ruleset.Link()
    if rnd.random() < 0.5:
        link = ruleset.Link(
            gateways=tuple(_random_range(rnd, rnd.choice((4, 6))) for _ in range(2)),
            scoped_gateways=tuple(("eth0", _random_range(rnd, 6)) for _ in range(2)),
            onlink=tuple(_random_range(rnd, rnd.choice((4, 6))) for _ in range(2)),
        )
    rs = ruleset.PodRuleset(
        namespace=rnd.choice(("ns", "kube-system", "a" * 63)),
        pod=f"pod-{rnd.randrange(100)}" + rnd.choice(("", "_x", "é")),
        ingress=_random_direction(rnd),
        egress=_random_direction(rnd),
        mode=rnd.choice(list(ruleset.PolicyMode)),
        quarantine=quarantine,
        node_guard=guard,
        anti_spoof=anti_spoof,
        link=link,
    )
    ifaces = rnd.choice(((), ("eth0",), ("eth0", "net1"), ("net1", "eth0", "eth.0", "eth_0")))
    return rs, ifaces
