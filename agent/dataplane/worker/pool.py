"""The worker's threads: the parts of one batch run on a few threads at once, so the kernel
work of several namespaces uses both cores while each namespace's requests keep their order.

Why threads and not processes: setns(2) moves only the calling thread into a namespace, and
what the work waits on (libnftables through ctypes, netlink sockets, iptables-restore and
ipset children) runs without Python's lock; the namespace handles (libnftables contexts,
sockets) stay shared in one process as before. Which part may start when is `lanes`' pure
decision; this module only holds the lock around it and runs the parts. The thread calling
`run` works too, so `threads` is the number of parts at most in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from agent.dataplane.worker import lanes

T = TypeVar("T")
Job = tuple[Hashable | None, Callable[[], T]]  # (lane key, None: a barrier; the work)


class Pool:
    """`threads` at most at work; the helper threads start on first need and live as long as
    the process (daemon threads: a worker that exits does not wait for them)."""

    def __init__(self, threads: int) -> None:
        self.threads = max(1, threads)
        self._lanes = lanes.Lanes()
        self._ready = threading.Condition()
        self._work: dict[int, Callable[[], None]] = {}
        self._helpers: list[threading.Thread] = []

    def run(self, jobs: Sequence[Job[T]]) -> list[T]:
        """Every job's result, in order; jobs of one key ran one after another in order, the
        others possibly at the same time. A job that raises does not stop the others; the
        first such exception is raised once all are done. One caller at a time."""
        if self.threads == 1 or len(jobs) < 2:
            return [work() for _, work in jobs]
        results: dict[int, T] = {}
        errors: list[BaseException] = []

        def wrap(index: int, work: Callable[[], T]) -> Callable[[], None]:
            def job() -> None:
                try:
                    results[index] = work()
                except Exception as exc:  # handed to the caller of `run`
                    errors.append(exc)

            return job

        with self._ready:
            for index, (key, work) in enumerate(jobs):
                self._work[self._lanes.add(key)] = wrap(index, work)
            self._start_helpers(min(self.threads, len(jobs)) - 1)
            self._ready.notify_all()
        self._serve(until_idle=True)
        if errors:
            raise errors[0]
        return [results[index] for index in range(len(jobs))]

    def _start_helpers(self, wanted: int) -> None:
        while len(self._helpers) < wanted:
            helper = threading.Thread(
                target=self._serve, name=f"dataplane-{len(self._helpers) + 1}", daemon=True
            )
            self._helpers.append(helper)
            helper.start()

    def _serve(self, until_idle: bool = False) -> None:
        """Run parts as they may start; the caller of `run` returns once none is left, a
        helper waits for the next batch."""
        with self._ready:
            while True:
                if until_idle and self._lanes.idle():
                    return
                task = self._lanes.take()
                if task is None:
                    self._ready.wait()
                    continue
                job = self._work.pop(task)
                self._ready.release()
                try:
                    job()
                finally:
                    self._ready.acquire()
                    self._lanes.finish(task)
                    self._ready.notify_all()
