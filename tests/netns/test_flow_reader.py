"""The drop reader process against the real kernel: NFLOG from inside a pod namespace, a
group already taken, a namespace that vanishes; and the worker's drop counters."""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent.calc import ruleset
from agent.dataplane import client as dp_client
from agent.dataplane import netns
from agent.dataplane.nft import render as render_nft
from testbed.sandbox import probe, topology
from tests import conftest
from tests.support import dataplane as dpt

pytestmark = conftest.requires_root


class ReaderProc:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.flows.reader"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.buffer = b""
        self.seen: list[dict[str, Any]] = []

    def send(self, **request: Any) -> None:
        assert self.proc.stdin is not None
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


@pytest.fixture
def sandbox() -> Iterator[topology.Sandbox]:
    with topology.Sandbox() as box:
        yield box


def test_reader_receives_drops_from_inside_the_pod_namespace(sandbox: topology.Sandbox) -> None:
    node = sandbox.add_node("n1")
    a = sandbox.add_pod(node, "x", "a", ipv6=False)
    b = sandbox.add_pod(node, "x", "b", ipv6=False)
    rs = ruleset.PodRuleset(
        "x", "b", ingress=ruleset.DirectionRuleset(isolated=True, policies=("x/deny",))
    )
    script = render_nft.render(rs, [b.interface]).script
    subprocess.run(
        ["ip", "netns", "exec", b.netns, "nft", "-f", "-"], input=script.encode(), check=True
    )
    ino = os.stat(b.netns_path).st_ino
    reader, rival = ReaderProc(), ReaderProc()
    try:
        reader.send(op="open", key="x/b", path=b.netns_path, ino=ino)
        reader.wait(lambda m: m.get("opened") == "x/b")
        assert probe.probe(a, b.ipv4, 80, "tcp", timeout=0.5) == probe.TIMEOUT
        message = reader.wait(lambda m: m.get("packets"))
        prefix, src, dst, proto, _sport, dport = message["packets"][0]
        assert (prefix, src, dst, proto, dport) == (
            "podseg ingress policy enforce",
            a.ipv4,
            b.ipv4,
            6,
            80,
        )
        assert message["key"] == "x/b"
        # the group is held: a second reader is told so, and stays up
        rival.send(op="open", key="x/b", path=b.netns_path, ino=ino)
        error = rival.wait(lambda m: "error" in m)
        assert "busy" in error["error"].lower()
        rival.send(op="open", key="x/b", path=b.netns_path, ino=ino + 1)  # stale inode
        rival.wait(lambda m: "error" in m and m is not error)
        assert rival.proc.poll() is None

        async def counters() -> dict[str, dict[str, int]]:
            client = dp_client.WorkerClient(timeout=10)
            try:
                target = netns.Target(b.netns_path, ino, (b.interface,))
                return await dpt.counters(client, {"x/b": target})
            finally:
                await client.close()

        values = asyncio.run(counters())["x/b"]
        assert values[render_nft.counter_name(ruleset.Direction.INGRESS, "policy", rs.mode)] >= 1
        # the namespace vanishes: the reader closes that source cleanly and stays up
        sandbox.remove_pod(b)
        closed = reader.wait(lambda m: m.get("closed") == "x/b", timeout=5)
        assert closed["reason"] == "netns_gone"
        assert reader.proc.poll() is None
    finally:
        reader.close()
        rival.close()
