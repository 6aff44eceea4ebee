"""The iptables backend's incremental path against the real kernel, through the real worker.

A remote pod's label flip becomes `ipset add`/`del` on the live sets of the pod's namespace
(no new sets, no iptables-restore) and a real TCP connection's verdict flips with it; after
random walks of rulesets, the live sets hold, element for element, what a whole apply of the
same ruleset programs; a patch onto sets someone else changed is refused or not vouched for.

Root only. Namespaces `psg-<random6>-render` / `-rpeer` (fixtures in conftest) and
`psg-<random6>-ii<n>`, deleted by their fixtures.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator

import pytest

from agent.calc import intervals, ruleset
from agent.dataplane import backends, protocol
from agent.dataplane import client as dp_client
from testbed.sandbox import tables
from tests.support import dataplane as dpt
from tests.support import kernel, privilege
from tests.support.kernel import IPT, TCP, UDP, P, run, target, v4, with_worker

pytestmark = [
    pytest.mark.skipif(not privilege.has("ipset"), reason="needs ipset (scripts/setup.sh)"),
    pytest.mark.skipif(
        not privilege.has("iptables-restore"), reason="needs iptables (scripts/setup.sh)"
    ),
]


SERVE = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"""

CONNECT = """
import socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("open")
except TimeoutError:
    print("timeout")
except OSError as exc:
    print("error", exc.errno)
"""


@pytest.fixture
def tcp_server(pod_and_peer: tuple[str, str]) -> Iterator[tuple[str, str]]:
    """A TCP server on 198.18.0.10:80 in the pod namespace for the test's lifetime."""
    pod, peer = pod_and_peer
    proc = subprocess.Popen(
        ["ip", "netns", "exec", pod, sys.executable, "-c", SERVE, "198.18.0.10", "80"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield pod, peer
    finally:
        proc.kill()
        proc.wait()


def connect(src: str, dst: str, port: int, timeout: float = 1.0) -> str:
    """One real TCP connection attempt from namespace `src`: open, timeout or error."""
    cmd = ("ip", "netns", "exec", src, sys.executable, "-c", CONNECT, dst, str(port))
    return run(*cmd, str(timeout)).strip()


class Programmer:
    """What the sync layer does for one namespace, by hand: whole applies and patches through
    one worker, keeping what the agent keeps (`backends.Known`) between them."""

    def __init__(self, client: dp_client.WorkerClient, ns: str) -> None:
        self.client, self.target = client, target(ns)
        self.program: backends.Program | None = None
        self.known = backends.Known(None, None, None)

    async def whole(self, rs: ruleset.PodRuleset) -> None:
        program = IPT.render(rs, ["eth0"])
        committed = await backends.commit(self.client, IPT, self.target, program)
        assert committed.token is not None and committed.digest is not None
        self.program, self.known = program, backends.Known(None, committed.token, committed.digest)

    async def patch(self, rs: ruleset.PodRuleset) -> protocol.Patched | None:
        """The patch's reply; None when only a whole apply can do it (then done whole)."""
        program = IPT.render(rs, ["eth0"])
        assert self.program is not None
        script = IPT.patch_script(self.program, program)
        request = IPT.patch_request(self.target, program, script or "", self.known)
        if not script or request is None:
            await self.whole(rs)
            return None
        reply = await self.client.call(request)
        if reply.applied and reply.sole:
            self.program = program
            self.known = backends.Known(None, self.known.token, reply.digest)
        return reply


def allow_from(*peers: ruleset.AddrRange) -> ruleset.PodRuleset:
    """Ingress isolated: TCP 80 from `peers`; egress isolated: UDP 53 to the same peers."""
    return ruleset.PodRuleset(
        "prod",
        "web",
        ingress=ruleset.DirectionRuleset(
            isolated=True,
            port_peers=tuple(ruleset.PeerPort(p, TCP, P(80, 80)) for p in peers),
            policies=("prod/web",),
        ),
        egress=ruleset.DirectionRuleset(
            isolated=True,
            port_peers=tuple(ruleset.PeerPort(p, UDP, P(53, 53)) for p in peers),
            policies=("prod/web",),
        ),
    )


def test_label_flip_patches_live_sets_and_the_tcp_verdict_flips(
    tcp_server: tuple[str, str],
) -> None:
    pod, peer = tcp_server
    others = [v4(100 + n) for n in range(50)]  # the peer set without the probing peer

    async def scenario(client: dp_client.WorkerClient) -> None:
        prog = Programmer(client, pod)
        await prog.whole(allow_from(*others))
        assert connect(peer, "198.18.0.10", 80) == "timeout"
        names = run("ip", "netns", "exec", pod, "ipset", "list", "-n").split()
        # The peer's labels flip: it joins the selected peers.
        joined = allow_from(*others, v4(20))
        reply = await prog.patch(joined)
        assert reply is not None and reply.applied and reply.sole
        # Same sets (no new generation, no whole apply), the peer now in them.
        assert run("ip", "netns", "exec", pod, "ipset", "list", "-n").split() == names
        assert "198.18.0.20,tcp:80" in tables.ipset_elements(pod)["i4p"]
        assert connect(peer, "198.18.0.10", 80) == "open"  # committed before the reply
        # Ownership bookkeeping: a read-back finds the patched fingerprint and the digest the
        # patch reported (a restarted agent adopts it, a resync sees no drift).
        fingerprint, digest = await dpt.examine(client, IPT, target(pod))
        assert fingerprint == IPT.render(joined, ["eth0"]).fingerprint
        assert digest == reply.digest
        # It flips back.
        reply = await prog.patch(allow_from(*others))
        assert reply is not None and reply.applied and reply.sole
        assert connect(peer, "198.18.0.10", 80) == "timeout"
        fingerprint, digest = await dpt.examine(client, IPT, target(pod))
        assert fingerprint == IPT.render(allow_from(*others), ["eth0"]).fingerprint
        assert digest == reply.digest

    with_worker(scenario)


def test_patch_onto_changed_sets_falls_back(netns: str) -> None:
    """Someone else edited the sets: a patch is refused (fingerprint set changed) or not
    vouched for (element counts differ); either way the caller applies whole."""
    base = [v4(100 + n) for n in range(5)]

    async def scenario(client: dp_client.WorkerClient) -> None:
        prog = Programmer(client, netns)
        await prog.whole(allow_from(*base))
        token = prog.known.token
        # An element added behind the agent's back: the patch runs, but is not vouched for.
        run("ip", "netns", "exec", netns, "ipset", "add", f"PODSEG-{token}-i4p", "9.9.9.9,tcp:80")
        reply = await prog.patch(allow_from(*base, v4(20)))
        assert reply is not None and reply.applied and not reply.sole
        # The fingerprint set swapped behind its back: ipset refuses the batch's first line.
        await prog.whole(allow_from(*base))
        fp_set = f"PODSEG-{prog.known.token}-fp"
        run("ip", "netns", "exec", netns, "ipset", "flush", fp_set)
        with pytest.raises(protocol.ApplyFailed):
            await prog.patch(allow_from(*base, v4(21)))
        # With the fingerprint set empty, a read-back knows no current ruleset: whole apply.
        fingerprint, _ = await dpt.examine(client, IPT, target(netns))
        assert fingerprint is None

    with_worker(scenario)


# -- randomised equivalence: patched sets == freshly applied sets -------------------------


def _ports(rng: random.Random) -> ruleset.PortRange:
    """Single ports, short ranges (expanded into hash:net,port elements) and one long range
    (a set of its own, matched with --dport)."""
    first, last = rng.choice([(53, 53), (80, 81), (443, 443), (8080, 8083), (9000, 9500)])
    return ruleset.PortRange(first, last)


Raw = tuple[list[ruleset.AddrRange], list[intervals.Triple]]


def _raw(rng: random.Random, n: int) -> Raw:
    anys = [
        kernel.random_addr_range(rng, rng.choice([4, 6])) for _ in range(rng.randrange(n // 2, n))
    ]
    triples = [
        (kernel.random_addr_range(rng, rng.choice([4, 4, 6])), rng.choice([6, 17]), _ports(rng))
        for _ in range(rng.randrange(n // 2, n))
    ]
    return anys, triples


def _mutate(rng: random.Random, raw: Raw) -> Raw:
    """A delta: keep most inputs, drop some, add some (ranges split and merge)."""
    more = _raw(rng, 5)
    return (
        [a for a in raw[0] if rng.random() > 0.1] + more[0],
        [t for t in raw[1] if rng.random() > 0.1] + more[1],
    )


def _direction(raw: Raw) -> ruleset.DirectionRuleset:
    anys = intervals.merge_addrs(raw[0])
    return ruleset.DirectionRuleset(
        isolated=True,
        any_port_peers=anys,
        port_peers=intervals.canonical_peer_ports(raw[1], exclude=anys),
        policies=("p/one",),
    )


def _ruleset(ingress: Raw, egress: Raw) -> ruleset.PodRuleset:
    return ruleset.PodRuleset("p", "web", ingress=_direction(ingress), egress=_direction(egress))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_patched_sets_equal_a_whole_apply_element_for_element(
    two_netns: tuple[str, str], seed: int
) -> None:
    patched_ns, fresh_ns = two_netns
    rng = random.Random(seed)
    ingress, egress = _raw(rng, 60), _raw(rng, 60)

    async def scenario(client: dp_client.WorkerClient) -> tuple[int, int]:
        patched, fresh = Programmer(client, patched_ns), Programmer(client, fresh_ns)
        await patched.whole(_ruleset(ingress, egress))
        walk_in, walk_out = ingress, egress
        patches = wholes = 0
        for _ in range(15):
            walk_in, walk_out = _mutate(rng, walk_in), _mutate(rng, walk_out)
            rs = _ruleset(walk_in, walk_out)
            reply = await patched.patch(rs)
            if reply is None:
                wholes += 1  # a set appeared or vanished (a new port range): whole apply
            else:
                assert reply.applied and reply.sole
                patches += 1
            await fresh.whole(rs)
            assert tables.ipset_elements(patched_ns) == tables.ipset_elements(fresh_ns)
            fingerprint, digest = await dpt.examine(client, IPT, target(patched_ns))
            assert fingerprint == IPT.render(rs, ["eth0"]).fingerprint
            assert digest == patched.known.digest
        return patches, wholes

    patches, wholes = with_worker(scenario)
    assert patches >= 8, (patches, wholes)
