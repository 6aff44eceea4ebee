"""The worker's threads (`agent.dataplane.worker.pool`): parts of different namespaces run at
the same time, one namespace's never do and keep their order, every result comes back in
order, and a part that raises does not stop the others. Plain threads, no namespaces (the
kernel side: tests/kernel/test_worker_pool.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from agent.dataplane.worker import pool

WAIT_S = 10.0  # a deadline for a meeting that happens at once when parts overlap


def test_parts_of_two_namespaces_run_at_the_same_time() -> None:
    meeting = threading.Barrier(2, timeout=WAIT_S)

    def part(name: str) -> Callable[[], str]:
        def work() -> str:
            meeting.wait()  # both must be running at once, or this times out
            return name

        return work

    assert pool.Pool(2).run([("a", part("a")), ("b", part("b"))]) == ["a", "b"]


def test_parts_of_one_namespace_run_one_at_a_time_in_order() -> None:
    events: list[str] = []
    inside = threading.Lock()

    def part(name: str) -> Callable[[], str]:
        def work() -> str:
            assert inside.acquire(blocking=False), f"{name} overlapped another part"
            events.append(name)
            time.sleep(0.01)  # room for a wrong schedule to overlap (not a readiness wait)
            inside.release()
            return name

        return work

    names = [f"a{i}" for i in range(6)]
    assert pool.Pool(4).run([("a", part(n)) for n in names]) == names
    assert events == names


def test_results_come_back_in_order_and_a_raising_part_fails_alone() -> None:
    done: list[str] = []

    def ok(name: str) -> Callable[[], str]:
        def work() -> str:
            done.append(name)
            return name

        return work

    def boom() -> str:
        raise RuntimeError("boom")

    runner = pool.Pool(3)
    jobs = [("a", ok("a")), ("b", boom), ("c", ok("c")), (None, ok("barrier")), ("a", ok("a2"))]
    with pytest.raises(RuntimeError, match="boom"):
        runner.run(jobs)
    assert sorted(done) == ["a", "a2", "barrier", "c"]
    names = [f"p{i}" for i in range(20)]
    assert runner.run([(n[-1], ok(n)) for n in names]) == names  # the pool serves again
