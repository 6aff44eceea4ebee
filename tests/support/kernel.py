"""Helpers of the kernel tier: commands in a namespace, nft scripts loaded and read back, UDP
exchanges between two namespaces, the real dataplane worker for one call, and the drop reader
process. The fixtures that create the namespaces are in tests/kernel/conftest.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import select
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from agent.calc import intervals, ruleset
from agent.dataplane import backends
from agent.dataplane import client as dp_client
from agent.dataplane import netns as dp_netns
from agent.dataplane.nft import render as render_nft
from tests.support import dataplane as dpt
from tests.support import helperproc, privilege

TCP, UDP, SCTP = 6, 17, 132
# Both backends, for a test parametrized over them (iptables only with its tools).
BACKENDS = [
    "nftables",
    pytest.param(
        "iptables",
        marks=pytest.mark.skipif(
            not (privilege.has("ipset") and privilege.has("iptables-restore")),
            reason="needs ipset and iptables (scripts/setup.sh)",
        ),
    ),
]
P = ruleset.PortRange
V4_BASE = int(intervals.address_range("198.18.0.0").first)
V6_BASE = int(intervals.address_range("fd00:198:18::").first)


def run(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


def load(ns: str, script: str) -> None:
    run("ip", "netns", "exec", ns, "nft", "-f", "-", stdin=script)


def fingerprint_in(ns: str) -> str | None:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "list", "table", "inet", "podseg"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return render_nft.parse_fingerprint(done.stdout) if done.returncode == 0 else None


def link_local(ns: str, dev: str) -> str:
    """The IPv6 link-local address of `dev` in `ns`, once it is usable (waits up to 5 s)."""
    for _ in range(100):
        out = run("ip", "-n", ns, "-6", "-o", "addr", "show", "dev", dev, "scope", "link")
        if "inet6" in out and "tentative" not in out:
            return out.split("inet6 ")[1].split("/")[0]
        time.sleep(0.05)
    raise AssertionError(f"no link-local address on {dev} in {ns}")


def tables_in(ns: str) -> list[str]:
    return [
        line
        for line in run("ip", "netns", "exec", ns, "nft", "list", "tables").splitlines()
        if line
    ]


def v4(offset: int) -> ruleset.AddrRange:
    return ruleset.AddrRange(4, V4_BASE + offset, V4_BASE + offset)


def v6(offset: int) -> ruleset.AddrRange:
    return ruleset.AddrRange(6, V6_BASE + offset, V6_BASE + offset)


RECV = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(float(sys.argv[3]))
print("ready", flush=True)
try:
    data, peer = s.recvfrom(100)
    print("got", data.decode(), peer[1], flush=True)
except TimeoutError:
    print("timeout", flush=True)
"""


SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[3])))
try:
    s.sendto(b"hi", (sys.argv[1], int(sys.argv[2])))
    print("sent", flush=True)
except OSError as exc:
    print("error", exc.errno, flush=True)
"""


def udp_exchange(
    sender: str, receiver: str, dst: str, dport: int, sport: int, timeout: float = 1.0
) -> tuple[str, str]:
    """Send one datagram; return (sender's outcome, receiver's outcome)."""
    import sys

    recv = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            receiver,
            sys.executable,
            "-c",
            RECV,
            dst,
            str(dport),
            str(timeout),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert recv.stdout is not None and recv.stdout.readline().strip() == "ready"
        sent = run(
            "ip", "netns", "exec", sender, sys.executable, "-c", SEND, dst, str(dport), str(sport)
        ).strip()
        received = recv.communicate(timeout=timeout + 10)[0].strip()
    finally:
        recv.kill()
        recv.wait()
    return sent, received


T = TypeVar("T")


IPT = backends.Iptables()


def with_worker(fn: Callable[[dp_client.WorkerClient], Awaitable[T]]) -> T:
    async def scenario() -> T:
        client = dp_client.WorkerClient(timeout=20)
        try:
            return await fn(client)
        finally:
            await client.close()

    return asyncio.run(scenario())


def target(ns: str, ifaces: tuple[str, ...] = ("eth0",)) -> dp_netns.Target:
    st = os.stat(f"/run/netns/{ns}")
    return dp_netns.Target(f"/run/netns/{ns}", st.st_ino, ifaces)


def commit(ns: str, rs: ruleset.PodRuleset, backend_name: str = "nftables") -> None:
    """Commit `rs` (interface eth0) with the named backend through the real worker."""
    backend = backends.get(backend_name)
    program = backend.render(rs, ["eth0"])

    async def go(client: dp_client.WorkerClient) -> None:
        await backends.commit(client, backend, target(ns), program)

    with_worker(go)


def apply_iptables(ns: str, rs: ruleset.PodRuleset) -> tuple[str, str | None]:
    program = IPT.render(rs, ["eth0"])

    async def go(client: dp_client.WorkerClient) -> tuple[str, str | None]:
        digest = (await backends.commit(client, IPT, target(ns), program)).digest
        assert digest is not None
        fp, digest2 = await dpt.examine(client, IPT, target(ns))
        assert fp == program.fingerprint and digest2 == digest
        return program.fingerprint, digest

    return with_worker(go)


class ReaderProc:
    """The helper process (`agent.helper`: the drop reader and the change watcher) driven over
    its pipes; requests go to `part` unless they name another."""

    def __init__(self, part: str = "drops") -> None:
        self.part = part
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.helper"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=helperproc.helper_env(),
        )
        self.buffer = b""
        self.seen: list[dict[str, Any]] = []

    def send(self, **request: Any) -> None:
        assert self.proc.stdin is not None
        request.setdefault("part", self.part)
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()

    def wait(self, match: Any, timeout: float = 10.0) -> dict[str, Any]:
        """The first message (seen so far or arriving before the deadline) that `match`es."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        index = 0
        while True:
            while index < len(self.seen):
                if match(self.seen[index]):
                    return self.seen[index]
                index += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching reader message; got {self.seen[-5:]}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                assert chunk, "reader exited"
                self.buffer += chunk
                while b"\n" in self.buffer:
                    line, self.buffer = self.buffer.split(b"\n", 1)
                    self.seen.append(json.loads(line))

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def random_addr_range(
    rng: random.Random, family: int, single: float = 0.6, aligned: float = 0.25
) -> ruleset.AddrRange:
    """A single address (mostly: pod IPs; share `single`), an aligned block (`aligned`) or an
    odd range."""
    base, span = (V4_BASE, 1 << 12) if family == 4 else (V6_BASE, 1 << 20)
    first = base + rng.randrange(span)
    shape = rng.random()
    if shape < single:
        return ruleset.AddrRange(family, first, first)
    if shape < single + aligned:
        size = 1 << rng.randrange(1, 8)
        first -= (first - base) % size
        return ruleset.AddrRange(family, first, first + size - 1)
    return ruleset.AddrRange(family, first, first + rng.randrange(1, 300))


@contextlib.contextmanager
def pod_netns(label: str) -> Iterator[str]:
    """A fresh namespace `psg-<random>-<label>` with an `eth0` (one end of a veth pair),
    deleted afterwards, also on failure."""
    name = f"psg-{secrets.token_hex(3)}-{label}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(
            ["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"],
            check=True,
        )
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
