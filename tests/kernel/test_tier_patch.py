"""Admin-tier edits as derived element patches (`nft.tierpatch`, sent as one netlink batch by
the real worker), against a fresh full apply and against real probes.

* A random walk of tier edits (rule ports and port ranges, peers of both families, single
  addresses and ranges, the protocols without ports, a named-port entry that is not a
  product): every step is a derived patch, and the patched namespace lists exactly as one
  applied afresh with the same ruleset.
* Probes: an Admin Deny on a UDP port range, a Pass for the rest and a NetworkPolicy allowing
  the ports; an edit of the Deny's ports, then of its peers, each derived and committed as a
  patch, moves the verdicts as a fresh render would: first match, Pass hands over.

Root only; namespaces `psg-<random6>-two0/1`, `-render`/`-rpeer`, deleted by the fixtures."""

from __future__ import annotations

import random

from agent.calc import intervals, ruleset
from agent.dataplane import backends, protocol
from agent.dataplane import client as dp_client
from testbed.sandbox import tables
from tests.support import kernel
from tests.support.kernel import UDP, P, target, udp_exchange, with_worker

IFACES = ("eth0",)
NFT = backends.Nftables()
DENY, PASS, ACCEPT = ruleset.TierAction.DENY, ruleset.TierAction.PASS, ruleset.TierAction.ACCEPT
OTHER = ruleset.ProtoPorts(ruleset.OTHER_PROTOCOL, P(0, 65535))


class Committed:
    """One namespace's last commit, kept as the sync layer keeps it."""

    def __init__(self, client: dp_client.WorkerClient, ns: str) -> None:
        self.client, self.target = client, target(ns)
        self.rs: ruleset.PodRuleset | None = None
        self.program: backends.Program | None = None
        self.generation: int | None = None

    async def whole(self, rs: ruleset.PodRuleset) -> None:
        program = NFT.render(rs, IFACES)
        reply = await self.client.call(NFT.commit_request(self.target, program, True))
        self.rs, self.program, self.generation = rs, program, reply.generation

    async def derived(self, rs: ruleset.PodRuleset) -> bool:
        """Commit `rs` as the derived patch; fails when there is none or it is not netlink.
        False when the tables already hold `rs` (nothing to commit)."""
        assert self.program is not None
        program = NFT.derive(self.rs, self.program, rs, IFACES)
        assert program.patch is not None, "not derived"
        script = NFT.patch_script(self.program, program)
        if not script:
            assert program.fingerprint == self.program.fingerprint
            return False
        known = backends.Known(self.generation, None, None)
        request = NFT.patch_request(self.target, program, script, known)
        assert isinstance(request, protocol.Patch) and request.elements  # netlink
        reply = await self.client.call(request)
        assert isinstance(reply, protocol.Patched) and reply.applied and reply.sole, reply
        self.rs, self.program, self.generation = rs, program, reply.generation
        return True


def factored(
    action: ruleset.TierAction,
    addrs: list[ruleset.AddrRange],
    services: list[ruleset.ProtoPorts],
    rule: str,
) -> ruleset.TierEntry:
    ranges = tuple(intervals.merge_addrs(addrs))
    ports = tuple(sorted(set(services), key=lambda p: (p.protocol, p.ports.first)))
    elements = tuple(
        sorted(ruleset.PeerPort(r, p.protocol, p.ports) for r in ranges for p in ports)
    )
    return ruleset.TierEntry("ClusterNetworkPolicy/walk", rule, action, elements, ranges, ports)


def named(pairs: list[tuple[ruleset.AddrRange, int]]) -> ruleset.TierEntry:
    triples = [(a, 6, P(port, port)) for a, port in pairs]
    elements = tuple(intervals.canonical_peer_ports(triples, exclude=()))
    return ruleset.TierEntry("ClusterNetworkPolicy/walk", "named", ACCEPT, elements)


def _services(rng: random.Random) -> list[ruleset.ProtoPorts]:
    out = []
    for _ in range(rng.randrange(1, 4)):
        first = rng.choice([22, 53, 80, 443, rng.randrange(1024, 60000)])
        out.append(
            ruleset.ProtoPorts(rng.choice([6, 17, 132]), P(first, first + rng.choice([0, 9])))
        )
    if rng.random() < 0.3:
        out.append(OTHER)
    return out


def _addrs(rng: random.Random, n: int) -> list[ruleset.AddrRange]:
    return [kernel.random_addr_range(rng, rng.choice([4, 4, 6])) for _ in range(n)]


def test_tier_edits_patched_list_as_a_fresh_full_apply(two_netns: tuple[str, str]) -> None:
    patched_ns, fresh_ns = two_netns
    rng = random.Random(7)
    deny_addrs, deny_ports = _addrs(rng, 20), _services(rng)
    pass_addrs = _addrs(rng, 10)
    named_pairs = [(a, rng.choice([8080, 8081])) for a in _addrs(rng, 5)]

    def current() -> ruleset.PodRuleset:
        admin = (
            factored(DENY, deny_addrs, deny_ports, "deny"),
            named(named_pairs),
            factored(PASS, pass_addrs, [OTHER, ruleset.ProtoPorts(6, P(1, 65535))], "pass"),
        )
        baseline = (factored(DENY, pass_addrs, deny_ports, "baseline"),)
        return ruleset.PodRuleset(
            "p",
            "web",
            ingress=ruleset.DirectionRuleset(admin=admin, baseline=baseline),
            egress=ruleset.DirectionRuleset(admin=admin),
        )

    async def scenario(client: dp_client.WorkerClient) -> int:
        patched, fresh = Committed(client, patched_ns), Committed(client, fresh_ns)
        changed = 0
        await patched.whole(current())
        for _ in range(16):
            roll = rng.random()
            if roll < 0.35:
                deny_ports[:] = _services(rng)
            elif roll < 0.55 and len(deny_addrs) > 1:
                deny_addrs.pop(rng.randrange(len(deny_addrs)))
            elif roll < 0.75:
                deny_addrs.extend(_addrs(rng, rng.randrange(1, 3)))
            elif roll < 0.9:
                named_pairs.append((_addrs(rng, 1)[0], rng.choice([8080, 9090])))
            else:
                pass_addrs.extend(_addrs(rng, 1))
            rs = current()
            changed += await patched.derived(rs)
            await fresh.whole(rs)
            assert tables.canonical_listing(patched_ns) == tables.canonical_listing(fresh_ns)
            found = await client.call(NFT.examine_request(patched.target))
            assert found.fingerprint == NFT.render(rs, IFACES).fingerprint
        return changed

    assert with_worker(scenario) >= 12  # steps that changed the tables, each one patch


PEER = ruleset.AddrRange(4, 0xC6120014, 0xC6120014)  # 198.18.0.20, the probing peer
OTHERS = ruleset.AddrRange(4, 0xC6120100, 0xC61201FF)  # 198.18.1.0/24, nobody probes from


def _probed(
    deny_ports: ruleset.PortRange, deny_from: list[ruleset.AddrRange]
) -> ruleset.PodRuleset:
    admin = (
        factored(DENY, deny_from, [ruleset.ProtoPorts(UDP, deny_ports)], "deny"),
        factored(PASS, [PEER, OTHERS], [ruleset.ProtoPorts(UDP, P(5000, 5009))], "pass"),
    )
    return ruleset.PodRuleset(
        "prod",
        "web",
        ingress=ruleset.DirectionRuleset(
            isolated=True,
            port_peers=(ruleset.PeerPort(PEER, UDP, P(5000, 5005)),),
            policies=("prod/team",),
            admin=admin,
        ),
    )


def _verdicts(pod: str, peer: str) -> dict[int, bool]:
    out = {}
    for port in (5001, 5002, 5004, 5007):
        sent, received = udp_exchange(peer, pod, "198.18.0.10", port, 41000 + port % 1000)
        assert sent == "sent", sent
        out[port] = received.startswith("got")
    return out


def test_patched_tier_edits_move_the_verdicts(pod_and_peer: tuple[str, str]) -> None:
    pod, peer = pod_and_peer

    async def scenario(client: dp_client.WorkerClient) -> list[dict[int, bool]]:
        committed = Committed(client, pod)
        seen = []
        await committed.whole(_probed(P(5001, 5002), [PEER, OTHERS]))
        seen.append(_verdicts(pod, peer))
        assert await committed.derived(_probed(P(5004, 5004), [PEER, OTHERS]))  # the ports
        seen.append(_verdicts(pod, peer))
        assert await committed.derived(_probed(P(5004, 5004), [OTHERS]))  # the peers
        seen.append(_verdicts(pod, peer))
        return seen

    first, ports_moved, peer_gone = with_worker(scenario)
    # Deny first; Pass hands the rest to the NetworkPolicy (5000-5005); 5007: passed, denied
    assert first == {5001: False, 5002: False, 5004: True, 5007: False}
    assert ports_moved == {5001: True, 5002: True, 5004: False, 5007: False}
    assert peer_gone == {5001: True, 5002: True, 5004: True, 5007: False}
