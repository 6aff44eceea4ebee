"""Repair driven by change notifications, against the fake dataplane: a commit notified in a pod's
namespace that is not the agent's own makes the loop read that pod back at once (a full read-
back, whatever the generation says) and restore it, counted and reported as drift; the
notifications of the agent's own commits wake it without work; lost notifications count as a
stranger's commit."""

from __future__ import annotations

import asyncio
import time

from agent import store
from agent.dataplane import netns, protocol
from agent.sync import tamper
from tests.support import cluster as fx
from tests.support.syncnode import ALLOW_FROM_CLIENTS, Node, counter

WEB0 = "shop/web-0"
MARK_CLEARER = "inet evil post: filter hook postrouting priority 0"


def test_own_generations_are_not_suspects_and_strangers_are() -> None:
    watch = tamper.Watch()
    watch.follow(WEB0, netns.Target("/run/netns/psg-x", 1, ("eth0",)))
    watch.own(WEB0, 7)
    watch.notify(WEB0, [7])
    assert watch.pending() and watch.take() == set()
    assert not watch.pending()
    watch.own(WEB0, 9)
    watch.notify(WEB0, [8, 9])  # 8 is not ours
    assert watch.take() == {WEB0}
    watch.notify(WEB0, [], lost=True)  # notifications dropped: anything may have happened
    assert watch.take() == {WEB0}
    watch.notify(WEB0, list(range(100, 100 + tamper.MAX_PENDING + 1)))
    assert watch.take() == {WEB0}
    watch.notify("shop/unwatched", [1])
    assert watch.take() == set()
    watch.drop(WEB0)
    watch.notify(WEB0, [1])
    assert watch.take() == set()


def notify_latest(node: Node, name: str) -> None:
    """What the watcher reports after the namespace's last commit."""
    node.rec.watch.notify(f"shop/{name}", [node.fake(name).generation])


def tamper_pass(node: Node) -> None:
    suspects = node.rec.watch.take()
    asyncio.run(node.rec.reconcile(store.Change(), kind="tamper", suspects=suspects))


def test_a_notified_table_deletion_is_restored_at_once_and_reported() -> None:
    node = Node()
    node.run()
    notify_latest(node, "web-0")  # our own commit's notice
    assert node.rec.watch.take() == set()
    drift = counter("podseg_ruleset_drift_total")
    node.dataplane.drop_tables(node.fake("web-0"))
    notify_latest(node, "web-0")
    node.dataplane.sent.clear()
    tamper_pass(node)
    assert node.fake("web-0").fingerprint == node.desired("web-0")
    assert counter("podseg_ruleset_drift_total") == drift + 1
    assert ("shop/web-0", "RulesetDrift") in node.events.posted
    # Only the suspect was read back; the other pod's namespace was not touched.
    touched = {r.path for r in node.dataplane.sent if isinstance(r, protocol.InNetns)}
    assert touched == {node.fake("web-0").path}
    notify_latest(node, "web-0")  # the repair's own notice: nothing more to do
    assert node.rec.watch.take() == set()


def test_a_strangers_commit_followed_by_ours_is_still_read_back_in_full() -> None:
    """A foreign hook slips in right before one of our commits: the generation after our
    commit is ours, so only the notification of the stranger's reveals the hook."""
    node = Node()
    spec = {**ALLOW_FROM_CLIENTS, "policyTypes": ["Ingress", "Egress"]}
    node.apply(fx.event("networkpolicies", "MODIFIED", fx.policy("shop", "from-clients", spec)))
    node.run()
    ns = node.fake("web-0")
    node.dataplane.hook(ns, MARK_CLEARER)
    stranger = ns.generation
    moved = fx.pod(
        "shop", "client", "198.18.2.9", node="node-2", labels={"role": "client"}, version="5"
    )
    node.run(node.apply(fx.event("pods", "MODIFIED", moved)))
    assert node.state("web-0").generation == ns.generation  # our replace, vouched by generation
    node.rec.watch.notify(WEB0, [stranger, ns.generation])
    tamper_pass(node)
    assert node.state("web-0").foreign == (MARK_CLEARER,)
    assert ("shop/web-0", "ForeignHook") in node.events.posted
    assert node.fake("web-0").fingerprint == node.desired("web-0")  # dropped in output now


def test_the_loop_wakes_on_a_notification_and_repairs_within_a_moment() -> None:
    node = Node()

    async def scenario() -> float:
        await node.rec.reconcile()
        queue: asyncio.Queue[object] = asyncio.Queue()
        loop_task = asyncio.create_task(node.rec.run(queue))  # type: ignore[arg-type]
        try:
            await asyncio.sleep(0.05)
            trips = node.dataplane.trips
            notify_latest(node, "web-1")  # our own commit's notice: woken, nothing sent
            await asyncio.sleep(0.05)
            assert node.dataplane.trips == trips
            node.dataplane.drop_tables(node.fake("web-0"))
            started = time.monotonic()
            notify_latest(node, "web-0")
            while node.fake("web-0").fingerprint != node.desired("web-0"):
                assert time.monotonic() - started < 2.0, "not repaired"
                await asyncio.sleep(0.005)
            return time.monotonic() - started
        finally:
            loop_task.cancel()
            await asyncio.gather(loop_task, return_exceptions=True)

    assert asyncio.run(scenario()) < 1.0  # the resync period is 60 s
