"""Which of the requests the worker holds may start now, so that several namespaces are worked
on at once while each namespace sees its requests in the order the agent sent them.

Why: the worker commits on several threads (`agent.dataplane.worker.pool`; setns(2) moves
only the calling thread, and libnftables, netlink and the helper processes all run without
Python's lock), but a pod's commits must land in order (its second ruleset must end up in
the kernel, not its first), and one namespace's libnftables context and sockets are used by
one thread at a time. Each request carries a key, the identity of the namespace it touches:
requests of one key run one at a time in arrival order (a lane); requests of different keys
run in any order; a request with no key (a scan, a forget, a counter read over many
namespaces) is a barrier that runs alone, after everything sent before it and before
everything sent after it. Pure: no threads here; the pool holds the lock around it.
"""

from __future__ import annotations

from collections.abc import Hashable

Key = Hashable | None  # None: a barrier


class Lanes:
    """Tasks in arrival order, each waiting, running or finished (then forgotten)."""

    def __init__(self) -> None:
        self._waiting: dict[int, Key] = {}  # insertion order is arrival order
        self._running: dict[int, Key] = {}
        self._count = 0

    def add(self, key: Key) -> int:
        """Queue a task touching `key` (None: a barrier); its number."""
        task = self._count
        self._count += 1
        self._waiting[task] = key
        return task

    def take(self) -> int | None:
        """The earliest waiting task that may start now (it is running from here on), or None
        when none may: every waiting task's key is busy or held by an earlier waiting task,
        or a barrier is in the way."""
        if any(key is None for key in self._running.values()):
            return None  # a running barrier runs alone
        held: set[Hashable] = {key for key in self._running.values() if key is not None}
        for task, key in self._waiting.items():
            if key is None:
                if self._running or task != next(iter(self._waiting)):
                    return None  # a barrier waits for everything before it; so does the rest
                return self._start(task)
            if key not in held:
                return self._start(task)
            # Its key is busy, and stays held for the later tasks of its lane.
        return None

    def finish(self, task: int) -> None:
        """A running task is done: its key is free for the next of its lane."""
        del self._running[task]

    def idle(self) -> bool:
        """Nothing waiting and nothing running."""
        return not self._waiting and not self._running

    def _start(self, task: int) -> int:
        self._running[task] = self._waiting.pop(task)
        return task
