"""Hygiene over 1000 apply cycles through the real dataplane worker: no leaked file
descriptors, sockets (libnftables' netlink sockets, pyroute2's), threads or child processes,
and a flat RSS; and `podseg agent` exits cleanly on SIGTERM within the DaemonSet's grace
period (terminationGracePeriodSeconds: 15 in deploy/daemonset.yaml)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import subprocess
from collections.abc import Iterator

import pytest

from agent import model
from agent.calc import compile as calc_compile
from agent.dataplane import client as dp_client
from agent.dataplane import netns
from agent.dataplane.nft import render as render_nft
from testbed import chaos
from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import topology
from tests.support import dataplane as dpt
from tests.support.polling import wait_for

CYCLES = 1000
WARMUP = 100
GRACE_SECONDS = 15
RSS_GROWTH_LIMIT_KIB = 4096


@pytest.fixture(scope="module")
def sandbox() -> Iterator[topology.Sandbox]:
    with topology.Sandbox() as made:
        yield made


@pytest.fixture(scope="module")
def sandbox_pod(sandbox: topology.Sandbox) -> topology.SandboxPod:
    return sandbox.add_pod(sandbox.add_node("node-1"), "h", "a")


def footprint(pid: int) -> dict[str, int]:
    proc = pathlib.Path(f"/proc/{pid}")
    links = []
    for fd in (proc / "fd").iterdir():
        try:
            links.append(os.readlink(fd))
        except OSError:
            continue
    status = dict(
        line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line
    )
    return {
        "fds": len(links),
        "sockets": sum(1 for link in links if link.startswith("socket:")),
        "threads": len(list((proc / "task").iterdir())),
        "children": len(chaos.children(pid)),
        "rss_kib": int(status["VmRSS"].split()[0]),
    }


def scripts(pod: topology.SandboxPod) -> list[str]:
    target = model.Pod("h", "a", node_name="node-1", ips=(pod.ipv4,))
    out = []
    for cidr in ("198.18.0.0/16", "198.19.0.0/16"):
        policy = model.NetworkPolicy(
            "h",
            "p",
            ingress=(model.PolicyRule(peers=(model.Peer(ip_block=model.IPBlock(cidr)),)),),
            egress=(model.PolicyRule(peers=(model.Peer(ip_block=model.IPBlock(cidr)),)),),
            policy_types=("Ingress", "Egress"),
        )
        rs = calc_compile.compile_pod(target, [policy], {}, [target])
        out.append(render_nft.render(rs, [pod.interface]).script)
    return out


def test_worker_leaks_nothing_over_1000_apply_cycles(
    sandbox: topology.Sandbox, sandbox_pod: topology.SandboxPod
) -> None:
    # Only this sandbox's namespaces are searched: another run may hold the same addresses.
    netns_dir = str(sandbox.netns_dir)

    async def run() -> tuple[dict[str, int], dict[str, int], dict[str, int], dict[str, int]]:
        client = dp_client.WorkerClient(timeout=10)
        try:
            script_a, script_b = scripts(sandbox_pod)
            candidates = await client.scan(netns_dir, False)
            target = netns.Index(candidates).find([sandbox_pod.ipv4])
            assert target is not None
            worker_before = self_before = None
            for cycle in range(CYCLES):
                if cycle == WARMUP:
                    pid = await dpt.pid(client)
                    worker_before, self_before = footprint(pid), footprint(os.getpid())
                await dpt.apply(client, target, script_a if cycle % 2 else script_b)
                assert await dpt.fingerprint(client, target) is not None
                if cycle % 50 == 0:  # scans open netlink sockets; forget closes contexts
                    await client.scan(netns_dir, False)
                    await client.forget(None)
            pid = await dpt.pid(client)
            assert client.restarts == 0
            assert worker_before is not None and self_before is not None
            return worker_before, footprint(pid), self_before, footprint(os.getpid())
        finally:
            await client.close()

    worker_before, worker_after, self_before, self_after = asyncio.run(run())
    print(f"\nworker after {WARMUP} cycles: {worker_before}; after {CYCLES}: {worker_after}")
    for key in ("fds", "sockets", "threads", "children"):
        assert worker_after[key] <= worker_before[key], (key, worker_before, worker_after)
        assert self_after[key] <= self_before[key], (key, self_before, self_after)
    growth = worker_after["rss_kib"] - worker_before["rss_kib"]
    assert growth < RSS_GROWTH_LIMIT_KIB, (worker_before, worker_after)
    subprocess.run(  # leave the pod's namespace as we found it
        ["ip", "netns", "exec", sandbox_pod.netns, "nft", "-f", "-"],
        input=render_nft.delete_script(),
        text=True,
        check=True,
    )


def test_agent_handles_sigterm_within_the_grace_period() -> None:
    with sandbox_cluster.SandboxCluster(nodes=("node-1",)) as cluster:
        cluster.add_pod("g", "a", {"app": "a"})
        agent = cluster.start_agent("node-1")
        popen = agent._popen  # the real process, to signal it ourselves
        assert popen is not None
        workers = chaos.children(popen.pid)
        assert workers, "the agent runs its dataplane worker"
        popen.send_signal(signal.SIGTERM)
        assert popen.wait(GRACE_SECONDS) == 0
        assert agent.events("agent_stopped")
        wait_for(lambda: not any(chaos.alive(pid) for pid in workers), what="worker exited")
