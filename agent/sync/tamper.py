"""Repair driven by change notifications: which watched namespaces saw an nftables commit that
was not the agent's own, so that the reconcile loop reads them back at once instead of at the
next resync.

Why: a pod with NET_ADMIN in its own namespace can delete podseg's tables, flush a chain or hook
a chain that undoes the egress decision; until podseg reads the namespace back, its policy,
quarantine and node guard are gone. The change watcher (`agent.dataplane.watcher`, a part of
the helper process) reports the generation of every commit in each namespace the agent
enforces; this module keeps the agent's side of it:

* `follow` / `drop`: which namespaces to watch (a pod's, once its ruleset is in place; or, in
  holdover, a namespace found holding podseg's tables: `agent.sync.holdover`);
* `own`: the generation each of the agent's own commits left (a sole commit: the generation
  then vouches for the namespace), so that its notification is not taken for a stranger's;
* `take`: the keys whose namespace saw a commit of another generation, or lost notifications
  (the kernel overran the socket, or the helper restarted): the loop verifies those pods with
  a full read-back, skipping the generation shortcut (a stranger's commit followed by one of
  ours leaves the generation at ours).

Notifications of the agent's own commits thus wake the loop without work. Each pod's own
generations are kept until their notification is seen (at most `OWN_KEPT`). Without the helper
(`--no-tamper-watch`, the unit tests) only the bookkeeping runs.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from agent import metrics
from agent.dataplane import listener, netns

log = structlog.get_logger(__name__)

OWN_KEPT = 16  # own generations remembered per namespace until their notification arrives
MAX_PENDING = 64  # notified generations kept per namespace before it counts as lost
LOST = -1  # a pending "generation" that stands for notifications that never arrived

T = TypeVar("T")


class Watch:
    def __init__(self) -> None:
        self.wake = asyncio.Event()  # set when a notification may call for work
        self.targets: dict[str, tuple[str, int]] = {}
        self._pending: dict[str, set[int]] = {}
        self._own: dict[str, collections.deque[int]] = {}
        self._send: Callable[[listener.Open | listener.Close], None] = _nowhere
        self._opened: set[str] = set()

    # -- what to watch -------------------------------------------------------------------
    def follow(self, key: str, target: netns.Target) -> None:
        """Watch `target` under `key` (idempotent; a new namespace replaces the old one)."""
        where = (target.path, target.ino)
        if self.targets.get(key) != where:
            self.targets[key] = where
            self._send(listener.Open(key, *where))

    def drop(self, key: str) -> None:
        if self.targets.pop(key, None) is not None:
            self._send(listener.Close(key))
        self._pending.pop(key, None)
        self._own.pop(key, None)

    def own(self, key: str, generation: int | None) -> None:
        """The agent's own sole commit left the namespace of `key` at `generation`."""
        if generation is not None:
            self._own.setdefault(key, collections.deque(maxlen=OWN_KEPT)).append(generation)

    # -- what happened --------------------------------------------------------------------
    def notify(self, key: str, generations: list[int], lost: bool = False) -> None:
        """Commits reported in the namespace of `key` (`lost`: some may be missing)."""
        if key not in self.targets:
            return
        pending = self._pending.setdefault(key, set())
        pending.update(generations)
        if lost or len(pending) > MAX_PENDING:
            pending.clear()
            pending.add(LOST)
        self.wake.set()

    def take(self) -> set[str]:
        """The keys whose namespace saw a commit that is not one of ours since the last call
        (their own generations seen are forgotten)."""
        self.wake.clear()
        found = set()
        for key, pending in self._pending.items():
            own = self._own.get(key, ())
            if pending - set(own):
                found.add(key)
            if own:
                self._own[key] = collections.deque(
                    (g for g in own if g not in pending), maxlen=OWN_KEPT
                )
        self._pending.clear()
        if found:
            metrics.TAMPER_NOTICES.inc(len(found))
        return found

    def pending(self) -> bool:
        return self.wake.is_set()

    # -- the change watcher, in the helper process (agent.helperlink) ------------------------
    def attach(self, send: Callable[[listener.Open | listener.Close], None]) -> None:
        self._send = send

    def connected(self, restarted: bool) -> None:
        """The helper (re)started: watch every target again; after a restart, verify each
        (commits made while nobody listened went unseen)."""
        self._opened.clear()
        if restarted:
            metrics.TAMPER_WATCH_RESTARTS.inc()
        for key, where in self.targets.items():
            self._send(listener.Open(key, *where))
            if restarted:
                self.notify(key, [], lost=True)
        metrics.TAMPER_WATCHES.set(0)

    def handle(self, message: dict[str, Any]) -> None:
        """One line of the change watcher."""
        if "commits" in message:
            commits = message["commits"]
            key = str(message.get("key", ""))
            self.notify(key, [int(c[0]) for c in commits], lost=bool(message.get("lost")))
        elif "opened" in message:
            self._opened.add(str(message["opened"]))
        elif "closed" in message:
            key = str(message["closed"])
            self._opened.discard(key)
            if message.get("reason") != "requested":  # e.g. the namespace is gone: look now
                log.info("tamper_watch_closed", key=key, reason=message.get("reason"))
                self.notify(key, [], lost=True)
        elif "error" in message:
            key = str(message.get("key", ""))
            log.warning("tamper_watch_error", key=key, error=message["error"])
            self.notify(key, [], lost=True)  # unwatched: verify it now, then at each resync
        metrics.TAMPER_WATCHES.set(len(self._opened))


def _nowhere(_request: listener.Open | listener.Close) -> None:
    """Where requests go without a helper (`--no-tamper-watch`, unit tests): nowhere."""


async def next_item(queue: asyncio.Queue[T], wake: asyncio.Event, timeout: float) -> T | None:
    """The queue's next item, or None when `wake` is set or `timeout` seconds pass first."""
    if not queue.empty() or timeout <= 0 or wake.is_set():
        await asyncio.sleep(0)  # never a turn of the caller's loop without one of the event loop
        return queue.get_nowait() if not queue.empty() else None
    getter = asyncio.ensure_future(queue.get())
    waker = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait({getter, waker}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (getter, waker):
            task.cancel()
        await asyncio.gather(getter, waker, return_exceptions=True)
    if getter.cancelled() or getter.exception() is not None:
        return None  # cancelled before it took an item: the item stays in the queue
    return getter.result()
