"""The drop reader process against the real kernel: NFLOG from inside a pod namespace, a
group already taken, a namespace that vanishes; and the worker's drop counters."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator

import pytest

from agent.calc import ruleset
from agent.dataplane import client as dp_client
from agent.dataplane import netns
from agent.dataplane.nft import render as render_nft
from testbed.sandbox import probe, topology
from tests.support import dataplane as dpt
from tests.support.kernel import ReaderProc


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
