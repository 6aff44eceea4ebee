"""Element patches derived from the ruleset change (`Backend.derive`), through the real worker,
against a fresh full apply, after EVERY step of random walks.

Each step changes the peers of both directions (elements split and merge, IPv4 and IPv6,
any-port and port elements, two policies' own counting sets) and sometimes something else
(then the render path takes over). One namespace gets each step as the derived patch when
there is one (nftables: one netlink transaction; iptables: one `ipset restore` batch), the
other a whole apply of the same
ruleset; their listings must be equal (nft's JSON listing without handles, elements sorted;
iptables: every set element and the rules), the patched namespace's fingerprint must be the
ruleset's, and a read-back must find what the agent recorded (a resync finds nothing to fix).

Root only. Namespaces `psg-<random6>-fp<n>`, deleted by the fixture.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from agent.calc import intervals, ruleset
from agent.dataplane import backends, protocol
from agent.dataplane import client as dp_client
from testbed.sandbox import tables
from tests.support import kernel, privilege
from tests.support.kernel import run, target, with_worker

IFACES = ("eth0",)
Raw = tuple[list[ruleset.AddrRange], list[intervals.Triple]]


FLIP_PORTS = [(proto, port) for proto in (6, 17) for port in (53, 80, 443)]
ANCHORS = len(FLIP_PORTS)  # at each end of the triples: one per flipped port, never popped


def _anchors(at: int) -> list[intervals.Triple]:
    """A peer on each port the flips use, on addresses no random peer covers, so that the
    port specs of a flip's elements stay (a port spec that comes or goes changes the nftables
    skeleton: a whole apply)."""
    first = kernel.V4_BASE + (1 << 13) + at
    return [
        (ruleset.AddrRange(4, first + n, first + n), proto, ruleset.PortRange(port, port))
        for n, (proto, port) in enumerate(FLIP_PORTS)
    ]


def _raw(rng: random.Random, n: int) -> Raw:
    """Any-port peers and (peer, protocol, ports) inputs: single ports mostly, some ranges;
    anchors first and last (one in each policy's part)."""
    anys = [kernel.random_addr_range(rng, rng.choice([4, 6])) for _ in range(rng.randrange(n))]
    triples = _anchors(0)
    for _ in range(rng.randrange(n)):
        first = rng.choice([53, 80, 443, 8080, rng.randrange(1, 65000)])
        ports = ruleset.PortRange(first, first + rng.choice([0, 0, 0, 1, 20]))
        triples.append(
            (kernel.random_addr_range(rng, rng.choice([4, 4, 6])), rng.choice([6, 17, 132]), ports)
        )
    return anys, triples + _anchors(ANCHORS)


def _direction(ingress: Raw, split: int) -> ruleset.DirectionRuleset:
    """Isolated by two policies: the union of both, and each one's own elements."""

    def peers(raw: Raw) -> ruleset.PolicyPeers:
        anys = intervals.merge_addrs(raw[0])
        return ruleset.PolicyPeers("", anys, intervals.canonical_peer_ports(raw[1], exclude=anys))

    one = (ingress[0][:split], ingress[1][:split])
    two = (ingress[0][split:], ingress[1][split:])
    union = peers(ingress)
    return ruleset.DirectionRuleset(
        True,
        union.any_port_peers,
        union.port_peers,
        ("p/one", "p/two"),
        (
            dataclasses.replace(peers(one), policy="p/one"),
            dataclasses.replace(peers(two), policy="p/two"),
        ),
    )


def _ruleset(ingress: Raw, egress: Raw, split: int, other: int) -> ruleset.PodRuleset:
    rs = ruleset.PodRuleset("p", "web", _direction(ingress, split), _direction(egress, split))
    if other == 1:  # not an element change: the render path
        rs = dataclasses.replace(rs, mode=ruleset.PolicyMode.VISIBILITY)
    return rs


def _small(rng: random.Random, raw: Raw) -> Raw:
    """A flip: one or two peers come or go (a peer pod on one of the policies' ports, or on
    any port); what was there stays."""
    anys, triples = list(raw[0]), list(raw[1])
    for _ in range(rng.randrange(1, 3)):
        roll = rng.random()
        if roll < 0.3 and len(triples) > 2 * ANCHORS:
            triples.pop(rng.randrange(ANCHORS, len(triples) - ANCHORS))
        elif roll < 0.45 and anys:
            anys.pop(rng.randrange(len(anys)))
        elif roll < 0.85:
            port = rng.choice([53, 80, 443])
            peer = kernel.random_addr_range(rng, rng.choice([4, 4, 6]))
            triple = (peer, rng.choice([6, 17]), ruleset.PortRange(port, port))
            triples.insert(len(triples) - ANCHORS, triple)
        else:
            anys.append(kernel.random_addr_range(rng, rng.choice([4, 6])))
    return anys, triples


class Namespace:
    """What the sync layer keeps for one namespace between commits (by hand)."""

    def __init__(self, client: dp_client.WorkerClient, backend: backends.Backend, ns: str):
        self.client, self.backend, self.ns, self.target = client, backend, ns, target(ns)
        self.rs: ruleset.PodRuleset | None = None
        self.program: backends.Program | None = None
        self.known = backends.Known(None, None, None)

    async def whole(self, rs: ruleset.PodRuleset, program: backends.Program | None = None) -> None:
        program = program or self.backend.render(rs, IFACES)
        reply = await self.client.call(self.backend.commit_request(self.target, program, True))
        self.rs, self.program = rs, program
        self.known = backends.Known(reply.generation, reply.token, reply.digest)

    async def step(self, rs: ruleset.PodRuleset) -> str:
        """Commit `rs` as the sync layer would: derived patch, else render path (patch or
        whole). Which one it was."""
        program = self.backend.derive(self.rs, self.program, rs, IFACES)
        assert self.program is not None
        script = self.backend.patch_script(self.program, program)
        request = None
        if script:
            request = self.backend.patch_request(self.target, program, script, self.known)
        if request is None:
            await self.whole(rs, program)
            return "whole"
        if program.patch is not None and isinstance(request, protocol.Patch):
            assert request.state == program.fingerprint and request.elements  # netlink
        reply = await self.client.call(request)
        assert isinstance(reply, protocol.Patched) and reply.applied and reply.sole, reply
        self.rs, self.program = rs, program
        self.known = backends.Known(reply.generation, self.known.token, reply.digest)
        return "derived" if program.patch is not None else "rendered"


def _listing(backend: backends.Backend, ns: str) -> object:
    if backend.name == "nftables":
        return tables.canonical_listing(ns)
    rules = [
        line
        for family in ("iptables-save", "ip6tables-save")
        for line in run("ip", "netns", "exec", ns, family, "-t", "filter").splitlines()
        if line.startswith("-A ") and "podseg fp=" not in line
    ]
    return tables.ipset_elements(ns), sorted(_untoken(line) for line in rules)


def _untoken(line: str) -> str:
    return " ".join(
        "-".join([w.split("-")[0], *w.split("-")[2:]])
        if w.startswith("PODSEG-") and w.count("-") >= 2 and "-set" not in w
        else w
        for w in line.split()
    )


BACKENDS = [
    pytest.param(backends.Nftables(), id="nftables"),
    pytest.param(
        backends.Iptables(),
        id="iptables",
        marks=pytest.mark.skipif(not privilege.has("ipset"), reason="needs ipset"),
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [1, 2])
def test_derived_patches_list_as_a_fresh_full_apply(
    two_netns: tuple[str, str], backend: backends.Backend, seed: int
) -> None:
    patched_ns, fresh_ns = two_netns
    rng = random.Random(seed)

    async def scenario(client: dp_client.WorkerClient) -> dict[str, int]:
        patched = Namespace(client, backend, patched_ns)
        fresh = Namespace(client, backend, fresh_ns)
        ingress, egress = _raw(rng, 30), _raw(rng, 30)
        split, other = 10 + ANCHORS, 0
        await patched.whole(_ruleset(ingress, egress, split, other))
        ways = {"derived": 0, "rendered": 0, "whole": 0}
        for _ in range(20):
            ingress, egress = _small(rng, ingress), _small(rng, egress)
            if rng.random() < 0.15:
                other = 1 - other
            rs = _ruleset(ingress, egress, split, other)
            ways[await patched.step(rs)] += 1
            await fresh.whole(rs)
            assert _listing(backend, patched_ns) == _listing(backend, fresh_ns)
            found = await client.call(backend.examine_request(patched.target))
            assert found.fingerprint == backend.render(rs, IFACES).fingerprint
            # a resync finds nothing to fix: the digest, where the agent keeps one, matches
            if backend.name == "iptables":
                assert found.digest == patched.known.digest
            else:
                generation = await client.call(
                    protocol.ReadGeneration(patched.target.path, patched.target.ino)
                )
                assert generation.generation == patched.known.generation
        return ways

    ways = with_worker(scenario)
    # iptables falls back more: its sets exist only when not empty, one per long port range
    assert ways["derived"] >= (8 if backend.name == "nftables" else 5), ways
