"""The worker commits several namespaces at once (`agent.dataplane.worker.pool`), and what it
leaves is what a one-thread worker leaves: through the real worker process and real
namespaces, both backends.

A batch of two successive whole commits per pod (a bigger ruleset, then a smaller one) goes
to a worker with three threads and, for comparison, to a one-thread worker in a second set of
namespaces: the parts overlapped in time (their summed time exceeds the batch's), each pod
ends with its second ruleset (one namespace's parts ran in the order sent), and every pooled
namespace lists exactly what its sequential twin lists. A namespace that vanished fails its
own parts alone. Namespaces `psg-<random6>-pool<k>` / `-seq<k>`, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from collections.abc import Iterator

import pytest

from agent.calc import ruleset
from agent.dataplane import backends, protocol
from agent.dataplane import client as dp_client
from agent.dataplane.ipt import render as render_ipt
from tests.support import kernel

PODS = 6
POOL_THREADS = 3
FIRST_PEERS, SECOND_PEERS = 1500, 1000


def pod_ruleset(pod: int, peers: int) -> ruleset.PodRuleset:
    """Ingress from `peers` single addresses (every other one, so none merge), the block
    shifted per pod and per size: each pod and each of its two rulesets differ."""
    base = pod * 8192 + peers
    addrs = tuple(kernel.v4(base + 2 * i) for i in range(peers))
    direction = ruleset.DirectionRuleset(isolated=True, any_port_peers=addrs, policies=("a/p",))
    return ruleset.PodRuleset("a", f"p{pod}", ingress=direction)


@pytest.fixture
def pods() -> Iterator[tuple[list[str], list[str]]]:
    """PODS namespaces for the pooled worker and PODS twins for the one-thread worker."""
    with contextlib.ExitStack() as stack:
        pooled = [stack.enter_context(kernel.pod_netns(f"pool{k}")) for k in range(PODS)]
        sequential = [stack.enter_context(kernel.pod_netns(f"seq{k}")) for k in range(PODS)]
        yield pooled, sequential


def requests_for(
    backend: backends.Backend, names: list[str]
) -> list[protocol.Request[protocol.Committed]]:
    """Each pod's two commits one after the other (the second must win)."""
    out = []
    for pod, name in enumerate(names):
        target = kernel.target(name)
        for peers in (FIRST_PEERS, SECOND_PEERS):
            out.append(
                backend.commit_request(target, backend.render(pod_ruleset(pod, peers), ["eth0"]))
            )
    return out


def run_batch(
    requests: list[protocol.Request[protocol.Committed]], threads: int
) -> tuple[list[protocol.Committed | protocol.DataplaneError], float]:
    """The batch through a real worker with `threads`; its replies and its wall time."""

    async def go() -> tuple[list[protocol.Committed | protocol.DataplaneError], float]:
        client = dp_client.WorkerClient(timeout=30, threads=threads)
        try:
            await client.call(protocol.Ping())  # started: the wall time is the batch's alone
            started = time.perf_counter()
            replies = await client.batch(requests)
            return replies, time.perf_counter() - started
        finally:
            await client.close()

    return asyncio.run(go())


GENERATION = re.compile(r"PODSEG-[0-9a-f]{6}-")
COUNTS = re.compile(r"\[\d+:\d+\]")
INITVAL = re.compile(r" initval 0x[0-9a-f]+")


def listing(backend: str, name: str) -> str:
    """What the namespace holds of podseg, stateless, set generation tokens masked."""

    def cmd(*args: str) -> str:
        return kernel.run("ip", "netns", "exec", name, *args)

    if backend == "nftables":
        return cmd("nft", "-s", "list", "ruleset")
    saved = cmd("iptables-save", "-t", "filter") + cmd("ip6tables-save", "-t", "filter")
    lines = [COUNTS.sub("", line) for line in saved.splitlines() if not line.startswith("#")]
    # A hash set's seed is random and its elements come in hash order: sorted, seed masked.
    elements = sorted(INITVAL.sub("", line) for line in cmd("ipset", "save").splitlines())
    lines += elements + cmd("nft", "-s", "list", "ruleset").splitlines()
    return GENERATION.sub("PODSEG-GEN-", "\n".join(lines))


def held_fingerprint(backend: str, name: str) -> str | None:
    if backend == "nftables":
        return kernel.fingerprint_in(name)
    return render_ipt.parse_fingerprint(
        kernel.run("ip", "netns", "exec", name, "iptables-save", "-t", "filter")
    )


def overlapped(replies: list[protocol.Committed | protocol.DataplaneError], wall: float) -> bool:
    """Whether parts ran at the same time: their own times add up to more than the whole
    round trip (one thread: always less)."""
    return sum(r.seconds for r in replies if isinstance(r, protocol.Committed)) > wall


@pytest.mark.parametrize("backend_name", kernel.BACKENDS)
def test_a_pooled_batch_lists_what_a_sequential_one_does_each_pod_in_order(
    backend_name: str, pods: tuple[list[str], list[str]]
) -> None:
    backend = backends.get(backend_name)
    pooled, sequential = pods
    replies, wall = run_batch(requests_for(backend, pooled), POOL_THREADS)
    assert all(isinstance(r, protocol.Committed) for r in replies), replies
    assert overlapped(replies, wall), (wall, [r.seconds for r in replies])
    alone, _ = run_batch(requests_for(backend, sequential), 1)
    assert all(isinstance(r, protocol.Committed) for r in alone), alone
    for pod, (mine, twin) in enumerate(zip(pooled, sequential, strict=True)):
        second = backend.render(pod_ruleset(pod, SECOND_PEERS), ["eth0"]).fingerprint
        assert held_fingerprint(backend_name, mine) == second, f"pod {pod}: not its last"
        assert listing(backend_name, mine) == listing(backend_name, twin), f"pod {pod} differs"


def test_a_vanished_namespace_fails_only_its_own_parts(pods: tuple[list[str], list[str]]) -> None:
    backend = backends.get("nftables")
    pooled, _ = pods
    requests = requests_for(backend, pooled)  # targets resolved while every namespace is there
    gone = pooled[2]
    subprocess.run(["ip", "netns", "del", gone], check=True)

    replies, wall = run_batch(requests, POOL_THREADS)
    for pod, name in enumerate(pooled):
        mine = replies[2 * pod : 2 * pod + 2]
        if name == gone:
            assert all(isinstance(r, protocol.NetnsGone) for r in mine), mine
            continue
        assert all(isinstance(r, protocol.Committed) for r in mine), (pod, mine)
        second = backend.render(pod_ruleset(pod, SECOND_PEERS), ["eth0"]).fingerprint
        assert kernel.fingerprint_in(name) == second
    assert overlapped(replies, wall), (wall, replies)
