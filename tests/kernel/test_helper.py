"""The helper process against the real kernel, driven by the agent's side (`agent.helperlink`,
the drop collector and the change watch): the drop reader and the change watcher run in one
process, the agent's only child besides the dataplane worker, and both work in it (a real drop
is read, a stranger's commit is seen); killed, the helper is restarted, counted, and both work
again in the new process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from agent import helper, helperlink, metrics
from agent.calc import ruleset
from agent.dataplane import netns
from agent.dataplane.nft import render as render_nft
from agent.flows import collector as flows_collector
from agent.sync import tamper
from testbed.sandbox import probe, topology
from tests.support import cluster as fx
from tests.support import polling

KEY = "x/b"


@pytest.fixture
def sandbox() -> Iterator[topology.Sandbox]:
    with topology.Sandbox() as box:
        yield box


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def agent_children() -> dict[int, str]:
    """The `python -m agent.*` children of this process, by pid: their module."""
    found: dict[int, str] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                argv = cmdline.read().decode().split("\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and "-m" in argv and argv[argv.index("-m") + 1].startswith("agent"):
            found[int(pid)] = argv[argv.index("-m") + 1]
    return found


def test_one_helper_reads_drops_and_sees_tampering_and_both_survive_its_kill(
    sandbox: topology.Sandbox,
) -> None:
    node = sandbox.add_node("n1")
    a = sandbox.add_pod(node, "x", "a", ipv6=False)
    b = sandbox.add_pod(node, "x", "b", ipv6=False)
    rs = ruleset.PodRuleset(
        "x", "b", ingress=ruleset.DirectionRuleset(isolated=True, policies=("x/deny",))
    )
    subprocess.run(
        ["ip", "netns", "exec", b.netns, "nft", "-f", "-"],
        input=render_nft.render(rs, [b.interface]).script.encode(),
        check=True,
    )
    target = netns.Target(b.netns_path, os.stat(b.netns_path).st_ino, (b.interface,))
    cluster = fx.synced_store(pods=[fx.pod("x", "b", b.ipv4)], namespaces=[fx.namespace("x")])

    async def drop_is_read() -> None:
        before = sample("podseg_nflog_messages_total", result="ok")
        assert await asyncio.to_thread(probe.probe, a, b.ipv4, 80, "tcp", 0.5) == probe.TIMEOUT
        await polling.until(
            lambda: sample("podseg_nflog_messages_total", result="ok") > before, "a drop read"
        )

    async def tamper_is_seen(watch: tamper.Watch, table: str) -> None:
        watch.take()
        await asyncio.to_thread(
            subprocess.run,
            ["ip", "netns", "exec", b.netns, "nft", "add", "table", "inet", table],
            check=True,
        )
        await asyncio.wait_for(watch.wake.wait(), 5)
        assert watch.take() == {KEY}

    async def both_work(flows: flows_collector.Collector, watch: tamper.Watch, table: str) -> None:
        await polling.until(
            lambda: flows._opened == {KEY} and watch._opened == {KEY}, "both opened"
        )
        await drop_is_read()
        await tamper_is_seen(watch, table)

    async def scenario() -> None:
        flows = flows_collector.Collector(fx.settings(), cluster, None)  # type: ignore[arg-type]
        watch = tamper.Watch()
        link = helperlink.Link()
        link.add(helper.DROPS, flows)
        link.add(helper.CHANGES, watch)
        await link.start()
        try:
            flows.watch(cluster.pods[KEY], target, rs, applied=True)
            watch.follow(KEY, target)
            first = link.pid
            assert first is not None and agent_children() == {first: "agent.helper"}
            await both_work(flows, watch, "evil1")
            restarts = sample("podseg_helper_restarts_total", failed="process")
            watch_restarts = sample("podseg_tamper_watch_restarts_total")
            os.kill(first, signal.SIGKILL)
            await polling.until(lambda: link.pid not in (None, first), "a new helper")
            assert sample("podseg_helper_restarts_total", failed="process") == restarts + 1
            assert sample("podseg_tamper_watch_restarts_total") == watch_restarts + 1
            assert watch.take() == {KEY}  # unwatched for a while: read back
            await both_work(flows, watch, "evil2")
            assert agent_children() == {link.pid: "agent.helper"}
        finally:
            await link.close()
            await flows.close()

    asyncio.run(scenario())
