"""The change watcher process against the real kernel: every commit in a watched pod namespace is
reported with its generation within milliseconds, a commit of thousands of set elements is one
small notification (the socket filter keeps only NEWGEN), the agent's own commits are told
apart by generation, and a vanished namespace is reported."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from collections.abc import Iterator

import pytest

from agent import helper, helperlink
from agent.dataplane import client as dp_client
from agent.dataplane import netns, protocol
from agent.sync import tamper
from tests.support.kernel import ReaderProc, run

KEY = "x/a"


@pytest.fixture
def pod_netns() -> Iterator[str]:
    name = f"psg-{secrets.token_hex(3)}-tw"
    run("ip", "netns", "add", name)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def nft(ns: str, script: str) -> None:
    run("ip", "netns", "exec", ns, "nft", "-f", "-", stdin=script)


def test_every_commit_is_reported_once_and_big_commits_stay_small(pod_netns: str) -> None:
    path = f"/run/netns/{pod_netns}"
    watcher = ReaderProc("changes")
    try:
        watcher.send(op="open", key=KEY, path=path, ino=os.stat(path).st_ino)
        watcher.wait(lambda m: m.get("opened") == KEY)
        started = time.monotonic()
        nft(pod_netns, "table inet evil {\n}\n")
        first = watcher.wait(lambda m: m.get("commits"))
        latency = time.monotonic() - started
        assert first["key"] == KEY and not first["lost"]
        (generation, _pid, process), *more = first["commits"]
        assert more == [] and process == "nft"
        elements = ", ".join(f"198.18.{i >> 8}.{i & 255}" for i in range(5000))
        nft(
            pod_netns,
            f"table inet evil {{\n  set s {{\n    type ipv4_addr\n    elements = {{ {elements} }}"
            "\n  }\n}\n",
        )
        big = watcher.wait(lambda m: m.get("commits") and m is not first)
        assert [c[0] for c in big["commits"]] == [generation + 1] and not big["lost"]
        assert latency < 1.0
        run("ip", "netns", "del", pod_netns)
        closed = watcher.wait(lambda m: m.get("closed") == KEY, timeout=5)
        assert closed["reason"] == "netns_gone"
    finally:
        watcher.close()


def test_the_agent_side_tells_its_own_commits_from_a_strangers(pod_netns: str) -> None:
    path = f"/run/netns/{pod_netns}"
    target = netns.Target(path, os.stat(path).st_ino, ())

    async def scenario() -> None:
        watch = tamper.Watch()
        link = helperlink.Link()
        link.add(helper.CHANGES, watch)
        worker = dp_client.WorkerClient(timeout=10)
        await link.start()
        try:
            watch.follow(KEY, target)
            deadline = time.monotonic() + 10
            while KEY not in watch._opened:  # the helper is up and the socket open
                assert time.monotonic() < deadline, "the change watcher never opened the socket"
                await asyncio.sleep(0.02)
            ours = await worker.call(protocol.Commit(path, target.ino, "table inet podseg {\n}\n"))
            watch.own(KEY, ours.generation)
            await asyncio.wait_for(watch.wake.wait(), 5)
            assert watch.take() == set()  # woken by our own commit, nothing to do
            nft(pod_netns, "delete table inet podseg\n")
            await asyncio.wait_for(watch.wake.wait(), 5)
            assert watch.take() == {KEY}
        finally:
            await link.close()
            await worker.close()

    asyncio.run(scenario())
