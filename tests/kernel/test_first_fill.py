"""A pod's first commit in two steps (`agent.dataplane.nft.firstfill`) against the real kernel,
through the worker's own `commit` in this process: it lists exactly as the whole script
applied in one transaction, the pod is never less strict in between (probed live between the
two steps), a failure of the second step leaves tables that let nothing in but what the tiers
allow, and a derived element patch works on top. Namespaces `psg-<random>-*`."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import socket
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent.calc import intervals, ruleset
from agent.dataplane import backends, enter, protocol
from agent.dataplane import netns as dp_netns
from agent.dataplane.nft import firstfill, pending
from agent.dataplane.worker import namespaces
from agent.dataplane.worker import nft as worker_nft
from testbed.sandbox import tables
from tests.support import firstfill as cases
from tests.support import kernel
from tests.support.kernel import run

POD, ALLOWED, DENIED = "198.18.0.10", "198.18.0.20", "198.18.0.21"
POD6, ALLOWED6 = "fd00:198:18::10", "fd00:198:18::20"
NFT = backends.Nftables()
PENDING = (
    f"table inet {pending.TABLE} {{\n"
    '  comment "podseg pending pod=app/local"\n'
    "  chain input {\n    type filter hook input priority filter - 10; policy drop;\n  }\n"
    "}\n"
)


def _ruleset(peers: int = 400) -> ruleset.PodRuleset:
    """`cases.broad`, the peer namespace's first address allowed on any port and its second
    denied on TCP 80 by the Admin tier (and allowed by the policy, like every peer)."""
    allowed = tuple(intervals.address_range(ip) for ip in (ALLOWED, DENIED, ALLOWED6))
    rs = cases.broad(peers=peers, allowed=allowed, denied=(DENIED,))
    onlink = ruleset.AddrRange(6, cases.V6, cases.V6 + (1 << 64) - 1)  # the pod's /64
    return dataclasses.replace(rs, link=ruleset.Link(onlink=(onlink,)))


def _path(ns: str) -> tuple[str, int]:
    path = f"/run/netns/{ns}"
    return path, os.stat(path).st_ino


def _commit(worker: namespaces.Namespaces, ns: str, rs: ruleset.PodRuleset) -> tuple[int, Any]:
    """Commit `rs` as the agent's whole commit does; (generations it moved, the reply)."""
    request = NFT.commit_request(backends_target(ns), NFT.render(rs, ["eth0"]))
    assert isinstance(request, protocol.Commit)
    before = _generation(worker, ns)
    done = worker_nft.commit(worker, request)
    return (done.generation - before) & 0xFFFFFFFF, done


def backends_target(ns: str) -> dp_netns.Target:
    path, ino = _path(ns)
    return dp_netns.Target(path, ino, ("eth0",))


def _generation(worker: namespaces.Namespaces, ns: str) -> int:
    path, ino = _path(ns)
    return worker_nft.read_generation(worker, protocol.ReadGeneration(path, ino)).generation


def _load_pending(ns: str) -> None:
    """podseg-cni's pending table in `ns`, as the plugin leaves it."""
    run("ip", "netns", "exec", ns, "nft", "-f", "-", stdin=PENDING)


def _tables(ns: str) -> str:
    return run("ip", "netns", "exec", ns, "nft", "list", "tables")


def _listing(ns: str) -> list[Any]:
    """`nft -j list table` of both podseg tables, handles of tables (a namespace-wide counter
    the delete prelude advances) left out, everything else as listed."""
    out: list[Any] = []
    for family in ("inet", "netdev"):
        done = subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "-j", "list", "table", family, "podseg"],
            capture_output=True,
            text=True,
            check=True,
        )
        for item in json.loads(done.stdout)["nftables"]:
            if "metainfo" in item:
                continue
            if "table" in item:
                item["table"].pop("handle")
            out.append(item)
    return out


@pytest.fixture
def worker() -> Iterator[namespaces.Namespaces]:
    held = namespaces.Namespaces()
    try:
        yield held
    finally:
        held.forget(None)


@pytest.fixture
def pod(dual_stack: tuple[str, str]) -> Iterator[tuple[str, str]]:
    """`dual_stack` with the peer's second address (`DENIED`) and eth0 up on both sides."""
    pod_ns, peer = dual_stack
    run("ip", "-n", peer, "addr", "add", f"{DENIED}/16", "dev", "eth0p")
    # Neighbours known for good: a probe's verdict is the rules', not a neighbour solicitation
    # that a pending table dropped a moment before (IPv6 retries it only a second later).
    macs = {
        ns: json.loads(run("ip", "-j", "-n", ns, "link", "show", dev))[0]["address"]
        for ns, dev in ((pod_ns, "eth0"), (peer, "eth0p"))
    }
    for ns, dev, other, addresses in (
        (peer, "eth0p", pod_ns, (POD, POD6)),
        (pod_ns, "eth0", peer, (ALLOWED, DENIED, ALLOWED6)),
    ):
        for address in addresses:
            run(
                "ip",
                "-n",
                ns,
                "neigh",
                "replace",
                address,
                "dev",
                dev,
                "lladdr",
                macs[other],
                "nud",
                "permanent",
            )
    yield pod_ns, peer


@contextlib.contextmanager
def _socket_in(ns: str, family: int, kind: int) -> Iterator[socket.socket]:
    """A socket of namespace `ns` (a socket stays in the namespace it was made in)."""
    host = enter.Host()
    try:
        with host.entered(_path(ns)[0], None):
            sock = socket.socket(family, kind)
    finally:
        host.close()
    try:
        yield sock
    finally:
        sock.close()


class Probes:
    """TCP 80 and UDP 81 listeners in the pod, clients from the peer's addresses."""

    def __init__(self, pod: str, peer: str) -> None:
        self.pod, self.peer = pod, peer
        self.stack = contextlib.ExitStack()
        self.tcp: dict[int, socket.socket] = {}
        self.udp: dict[int, socket.socket] = {}
        for family, address in ((socket.AF_INET, POD), (socket.AF_INET6, POD6)):
            tcp = self.stack.enter_context(_socket_in(pod, family, socket.SOCK_STREAM))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((address, 80))
            tcp.listen(64)
            tcp.settimeout(0.5)
            udp = self.stack.enter_context(_socket_in(pod, family, socket.SOCK_DGRAM))
            udp.bind((address, 81))
            udp.settimeout(0.5)
            self.tcp[family], self.udp[family] = tcp, udp

    def tcp_ok(self, source: str) -> bool:
        family = socket.AF_INET6 if ":" in source else socket.AF_INET
        target = POD6 if ":" in source else POD
        with _socket_in(self.peer, family, socket.SOCK_STREAM) as client:
            client.bind((source, 0))
            client.settimeout(0.5)
            try:
                client.connect((target, 80))
            except OSError:  # a timeout: dropped
                return False
            self.tcp[family].accept()[0].close()
            return True

    def udp_ok(self, source: str) -> bool:
        family = socket.AF_INET6 if ":" in source else socket.AF_INET
        target = POD6 if ":" in source else POD
        token = os.urandom(8)
        with _socket_in(self.peer, family, socket.SOCK_DGRAM) as client:
            client.bind((source, 0))
            client.sendto(token, (target, 81))
            try:
                while True:  # a late datagram of an earlier probe is not this one
                    if self.udp[family].recv(64) == token:
                        return True
            except TimeoutError:
                return False

    def verdicts(self) -> dict[str, bool]:
        return {
            "tcp allowed": self.tcp_ok(ALLOWED),
            "udp allowed": self.udp_ok(ALLOWED),
            "tcp6 allowed": self.tcp_ok(ALLOWED6),
            "udp6 allowed": self.udp_ok(ALLOWED6),
            "tcp admin-denied": self.tcp_ok(DENIED),
            "udp admin-passed": self.udp_ok(DENIED),  # the Admin tier denies TCP 80 only
        }

    def close(self) -> None:
        self.stack.close()


FINAL = {
    "tcp allowed": True,
    "udp allowed": True,
    "tcp6 allowed": True,
    "udp6 allowed": True,
    "tcp admin-denied": False,
    "udp admin-passed": True,
}
NOTHING = dict.fromkeys(FINAL, False)


@pytest.fixture
def probes(pod: tuple[str, str]) -> Iterator[Probes]:
    held = Probes(*pod)
    try:
        yield held
    finally:
        held.close()


def _between(monkeypatch: pytest.MonkeyPatch, check: Callable[[], None]) -> list[bool]:
    """Run `check` between the two steps of the next split first commit (before step 2 is
    sent); the list holds True once it ran."""
    ran: list[bool] = []
    send = worker_nft._send_batch

    def checked(*args: Any) -> None:
        check()
        ran.append(True)
        send(*args)

    monkeypatch.setattr(worker_nft, "_send_batch", checked)
    return ran


@pytest.mark.parametrize("with_pending", [False, True])
def test_a_split_first_commit_lists_as_the_whole_script_does(
    two_netns: tuple[str, str],
    worker: namespaces.Namespaces,
    monkeypatch: pytest.MonkeyPatch,
    with_pending: bool,
) -> None:
    split_ns, whole_ns = two_netns
    rs = _ruleset()
    if with_pending:
        for ns in two_netns:
            _load_pending(ns)
    moved, done = _commit(worker, split_ns, rs)
    assert moved == 2 and done.digest is None  # two transactions, both ours: no read-back
    monkeypatch.setattr(firstfill, "LEAST", 1 << 60)  # the whole script
    assert _commit(worker, whole_ns, rs)[0] == 1
    assert _listing(split_ns) == _listing(whole_ns)  # rule handles and element order too
    assert tables.canonical_listing(split_ns) == tables.canonical_listing(whole_ns)
    for ns in two_netns:
        assert f"inet {pending.TABLE}" not in _tables(ns)
    path, ino = _path(split_ns)
    found = worker_nft.inspect(worker, protocol.Inspect(path, ino))
    assert found.fingerprint == NFT.render(rs, ["eth0"]).fingerprint


def test_a_replace_stays_one_transaction(netns: str, worker: namespaces.Namespaces) -> None:
    assert _commit(worker, netns, _ruleset())[0] == 2
    assert _commit(worker, netns, _ruleset(peers=450))[0] == 1  # a table is there: atomic


def test_the_pod_is_never_less_strict_between_the_steps(
    pod: tuple[str, str],
    probes: Probes,
    worker: namespaces.Namespaces,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pod_ns, _ = pod
    _load_pending(pod_ns)
    assert probes.verdicts() == NOTHING  # the pending table shuts the pod

    seen: dict[str, Any] = {}

    def window() -> None:
        seen["verdicts"] = probes.verdicts()
        seen["fingerprint"] = worker_nft.glance(worker, protocol.Glance(*_path(pod_ns))).fingerprint
        seen["tables"] = _tables(pod_ns)

    ran = _between(monkeypatch, window)
    _commit(worker, pod_ns, _ruleset())
    assert ran == [True]
    assert seen["verdicts"] == NOTHING
    assert seen["fingerprint"] is None  # never taken for current
    assert f"inet {pending.TABLE}" in seen["tables"] and "inet podseg" in seen["tables"]
    assert probes.verdicts() == FINAL


def test_without_a_pending_table_the_window_denies_what_the_policy_isolates(
    pod: tuple[str, str],
    probes: Probes,
    worker: namespaces.Namespaces,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pod_ns, _ = pod
    assert probes.verdicts() == dict.fromkeys(FINAL, True)  # no table: open
    seen: list[dict[str, bool]] = []
    ran = _between(monkeypatch, lambda: seen.append(probes.verdicts()))
    _commit(worker, pod_ns, _ruleset())
    assert ran == [True] and seen == [NOTHING]
    assert probes.verdicts() == FINAL


def test_a_refused_element_leaves_tables_that_let_nothing_in(
    pod: tuple[str, str], probes: Probes, worker: namespaces.Namespaces
) -> None:
    pod_ns, _ = pod
    rs = _ruleset()
    request = NFT.commit_request(backends_target(pod_ns), NFT.render(rs, ["eth0"]))
    assert isinstance(request, protocol.Commit)
    script = request.script
    # two overlapping intervals in one address set: nft's own parser would merge or refuse
    # them; sent as elements, the kernel refuses the transaction
    bad = script.replace("      198.18.64.0/24\n", "      198.18.64.0/24,\n      198.18.64.7\n", 1)
    assert bad != script
    split = firstfill.split(bad)
    assert split is not None
    path, ino = _path(pod_ns)
    before = _generation(worker, pod_ns)
    with pytest.raises(protocol.ApplyFailed):
        worker_nft.commit(worker, protocol.Commit(path, ino, bad))
    assert _generation(worker, pod_ns) == (before + 1) & 0xFFFFFFFF  # step 1 only
    assert worker_nft.glance(worker, protocol.Glance(path, ino)).fingerprint is None
    assert probes.verdicts() == NOTHING
    # the agent's retry replaces the tables in one transaction, as a fresh apply would
    moved, _ = _commit(worker, pod_ns, rs)
    assert moved == 1
    assert probes.verdicts() == FINAL


def test_a_failed_send_leaves_the_pending_table_and_empty_sets(
    pod: tuple[str, str],
    probes: Probes,
    worker: namespaces.Namespaces,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pod_ns, _ = pod
    _load_pending(pod_ns)

    def broken(*args: Any) -> None:
        raise protocol.ApplyFailed("element patch: [Errno 9] Bad file descriptor")

    monkeypatch.setattr(worker_nft, "_send_batch", broken)
    with pytest.raises(protocol.ApplyFailed):
        _commit(worker, pod_ns, _ruleset())
    held = _tables(pod_ns)
    assert f"inet {pending.TABLE}" in held and "inet podseg" in held
    assert probes.verdicts() == NOTHING


def test_a_patch_derives_after_a_split_first_commit(
    two_netns: tuple[str, str], worker: namespaces.Namespaces, monkeypatch: pytest.MonkeyPatch
) -> None:
    split_ns, fresh_ns = two_netns
    old_rs = _ruleset()
    old = NFT.render(old_rs, ["eth0"])
    moved, done = _commit(worker, split_ns, old_rs)
    assert moved == 2
    new_rs = _ruleset(peers=399)  # a peer gone from every peer set
    program = NFT.derive(old_rs, old, new_rs, ["eth0"])
    assert program.elements and program.patch is not None
    known = backends.Known(done.generation, None, None)
    request = NFT.patch_request(backends_target(split_ns), program, program.patch, known)
    assert isinstance(request, protocol.Patch) and request.state
    patched = worker_nft.patch(worker, request)
    assert patched.applied and patched.sole
    monkeypatch.setattr(firstfill, "LEAST", 1 << 60)  # the whole script
    _commit(worker, fresh_ns, new_rs)
    assert tables.canonical_listing(split_ns) == tables.canonical_listing(fresh_ns)
    path, ino = _path(split_ns)
    assert worker_nft.inspect(worker, protocol.Inspect(path, ino)).fingerprint == (
        program.fingerprint
    )


def _random(seed: int) -> ruleset.PodRuleset:
    """A canonical ruleset of random peers: singles, aligned blocks and odd ranges of both
    families, on any port or on ports and port ranges of TCP, UDP and SCTP, per policy too
    (touching ranges in a port spec's set, ranges to a block's end)."""
    rng = random.Random(seed)

    def direction(name: str) -> ruleset.DirectionRuleset:
        anys = intervals.merge_addrs(
            kernel.random_addr_range(rng, rng.choice((4, 6))) for _ in range(rng.randrange(60))
        )
        triples = [
            (
                kernel.random_addr_range(rng, rng.choice((4, 4, 6))),
                rng.choice((6, 17, 132)),
                ruleset.PortRange(*rng.choice(((80, 80), (53, 53), (8000, 8099), (9000, 9000)))),
            )
            for _ in range(rng.randrange(200, 600))
        ]
        ported = intervals.canonical_peer_ports(triples, exclude=anys)
        policy = ruleset.PolicyPeers(name, anys, ported)
        return ruleset.DirectionRuleset(True, anys, ported, (name,), per_policy=(policy,))

    return ruleset.PodRuleset(
        "app", f"r{seed}", ingress=direction("app/in"), egress=direction("app/out")
    )


@pytest.mark.parametrize("seed", range(6))
def test_random_peers_list_as_the_whole_script_does(
    two_netns: tuple[str, str],
    worker: namespaces.Namespaces,
    monkeypatch: pytest.MonkeyPatch,
    seed: int,
) -> None:
    split_ns, whole_ns = two_netns
    rs = _random(seed)
    monkeypatch.setattr(firstfill, "LEAST", 0)
    assert _commit(worker, split_ns, rs)[0] == 2
    monkeypatch.setattr(firstfill, "LEAST", 1 << 60)
    assert _commit(worker, whole_ns, rs)[0] == 1
    assert _listing(split_ns) == _listing(whole_ns)
