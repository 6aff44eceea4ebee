"""Holdover, against the fake dataplane: an agent restarted while the API server is unreachable
(its store never in sync) holds the podseg tables the kernel has, puts back a deleted or edited
one when a stranger's commit is notified or at resync (counted as drift), stays not Ready, and
hands over to the reconciler once every LIST is done."""

from __future__ import annotations

import asyncio
import time

from agent import store
from agent.k8s import watch
from agent.sync import holdover
from agent.sync import loop as sync_loop
from tests.support import cluster as fx
from tests.support import polling
from tests.support.syncnode import Node, counter

WAIT = 2.0  # seconds: deadline for the loop to act on what the test did


def restarted(node: Node) -> sync_loop.Reconciler:
    """A new agent on the same kernel whose API server does not answer (an empty store)."""
    rec = sync_loop.Reconciler(fx.settings(), store.Store(), node.dataplane, node.events)
    rec.holdover.started_at -= holdover.HOLDOVER_AFTER  # due now
    return rec


def test_an_agent_without_the_api_puts_back_a_deleted_table_and_is_not_ready() -> None:
    node = Node()
    node.run()
    held = {name: node.fake(name).tables for name in ("web-0", "web-1")}
    rec = restarted(node)

    async def scenario() -> None:
        queue: asyncio.Queue[watch.WatchEvent | watch.Relist] = asyncio.Queue()
        task = asyncio.create_task(rec.run(queue))
        try:
            await polling.until(
                lambda: len(rec.holdover.kept) == 2, "the tables held", timeout=WAIT
            )
            drift = counter("podseg_ruleset_drift_total")
            web0 = node.fake("web-0")
            node.dataplane.drop_tables(web0)
            key = next(k for k, v in rec.holdover.kept.items() if v.target.ino == web0.ino)
            rec.watch.notify(key, [web0.generation])  # the stranger's commit
            await polling.until(
                lambda: web0.tables == held["web-0"],
                "the deleted table put back",
                timeout=WAIT,
            )
            assert counter("podseg_ruleset_drift_total") == drift + 1
            assert node.fake("web-1").tables == held["web-1"]
            assert not rec.ready
            # The repair's own notice does not call for more.
            rec.watch.notify(key, [web0.generation])
            assert rec.watch.take() == set()
            # The API server answers: the reconciler takes over and holdover ends.
            for resource in ("services", "endpointslices"):
                queue.put_nowait(fx.relist(resource, []))
            for resource, items in node.lists.items():
                queue.put_nowait(fx.relist(resource, items))
            await polling.until(lambda: rec.ready, "ready once in sync", timeout=WAIT)
            assert rec.holdover.kept == {} and rec.holdover.ended
            assert not any(k.startswith(holdover.PREFIX) for k in rec.watch.targets)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())


def test_an_edit_is_undone_at_resync_and_a_vanished_namespace_is_let_go() -> None:
    node = Node()
    node.run()
    web0, web1 = node.fake("web-0"), node.fake("web-1")
    held = web0.tables
    rec = restarted(node)

    async def scenario() -> None:
        await rec.holdover.step(set(), verify=False)  # starts: snapshots both
        assert len(rec.holdover.kept) == 2
        node.dataplane.tamper(web0)  # no notification (say the watcher was down)
        web1.gone = True
        await rec.holdover.step(set(), verify=False)
        assert web0.tables != held  # nothing notified, no resync: not looked at
        await rec.holdover.step(set(), verify=True)  # the resync
        assert web0.tables == held
        assert [k.target.ino for k in rec.holdover.kept.values()] == [web0.ino]

    asyncio.run(scenario())


def test_holdover_waits_for_the_first_list_and_is_never_started_once_in_sync() -> None:
    node = Node()
    node.run()
    rec = sync_loop.Reconciler(fx.settings(), store.Store(), node.dataplane, node.events)
    node.dataplane.sent.clear()
    assert rec.holdover.due() > time.monotonic()  # a LIST normally comes first
    asyncio.run(rec.holdover.step(set(), verify=True))
    assert not rec.holdover.active and node.dataplane.sent == []
    rec.holdover.end()
    assert rec.holdover.due() == float("inf")
