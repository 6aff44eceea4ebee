"""The sync loop and podseg-cni's ADDs: an announced pod's pass runs ahead of the background
work that arrived in the same batch (a resync, another pod's event), so the pod start waits
for its own pod only."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from agent import store
from agent.dataplane import protocol
from agent.k8s import watch
from agent.sync import loop as sync_loop
from agent.sync import pod as sync_pod
from tests.support import cluster as fx
from tests.support.syncnode import Node

NEW_IP = "198.18.1.60"


def _announced(node: Node) -> watch.WatchEvent:
    """What `agent.cni` queues for a new pod whose API object has no IP yet."""
    fake = node.dataplane.add(NEW_IP)
    node.store.apply(fx.event("pods", "ADDED", fx.pod("shop", "new", None)), store.Change())
    body = {"key": "shop/new", "ips": [NEW_IP], "netns": fake.path, "containerId": "c0ffee"}
    return watch.WatchEvent(store.CNI, "ADDED", body, time.monotonic())


def _hooked(node: Node) -> list[tuple[list[str], list[protocol.Op]]]:
    """Per pass: the pods it committed, and every request sent up to its commit hook."""
    seen: list[tuple[list[str], list[protocol.Op]]] = []

    def hook(plans: list[sync_pod.Plan]) -> None:
        seen.append(([p.state.key for p in plans if p.done], node.dataplane.ops()))

    node.rec.after_commit.append(hook)
    return seen


def _run(node: Node, batch: list[Any], seen: list[Any], passes: int) -> None:
    """The agent's loop (`Reconciler.run`) over a queue holding `batch`, stopped once it has
    run `passes` passes (their commit hooks), within a deadline."""

    async def drive() -> None:
        queue: sync_loop.Queue = asyncio.Queue()
        for item in batch:
            queue.put_nowait(item)
        task = asyncio.create_task(node.rec.run(queue))
        deadline = time.monotonic() + 10
        try:
            while len(seen) < passes and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(drive())


def test_an_announced_pod_is_committed_before_the_resync_of_its_batch() -> None:
    node = Node(webs=3, resync_period=0.0)  # every wake-up of the loop is a resync
    node.run()
    seen = _hooked(node)
    node.dataplane.sent.clear()
    _run(node, [_announced(node)], seen, passes=2)
    (cni_keys, before), (_, after) = seen[:2]
    assert cni_keys == ["shop/new"]
    # nothing of the resync (generation reads, read-backs, the full scan) went before it
    assert protocol.Op.GENERATION not in before and protocol.Op.INSPECT not in before
    assert before.count(protocol.Op.SCAN) == 1
    assert protocol.Op.GENERATION in after[len(before) :]
    assert node.rec.pods["shop/new"].state is sync_pod.Status.ENFORCED


def test_an_announced_pod_goes_before_other_events_of_its_batch() -> None:
    node = Node(webs=3)
    node.run()
    seen = _hooked(node)
    relabelled: Any = fx.pod("shop", "web-1", node.webs[1], labels={}, version="2")
    batch = [fx.event("pods", "MODIFIED", relabelled), _announced(node)]
    _run(node, batch, seen, passes=2)
    assert [keys for keys, _ in seen] == [["shop/new"], ["shop/web-1"]]


def test_a_batch_of_announced_pods_alone_is_one_pass() -> None:
    node = Node(webs=1)
    node.run()
    seen = _hooked(node)
    _run(node, [_announced(node)], seen, passes=1)
    assert [keys for keys, _ in seen] == [["shop/new"]]
