"""Which batch part may start (`agent.dataplane.worker.lanes`): one namespace's parts one at
a time in the order sent, other namespaces' parts alongside, a barrier alone. The threads:
test_pool.py; the kernel: tests/kernel/test_worker_pool.py."""

from __future__ import annotations

import random
from collections.abc import Hashable

from agent.dataplane.worker import lanes


def started(schedule: lanes.Lanes) -> list[int]:
    """Every task that may start now, started."""
    out = []
    while (task := schedule.take()) is not None:
        out.append(task)
    return out


def test_other_namespaces_start_together_one_namespace_waits_its_turn() -> None:
    schedule = lanes.Lanes()
    a1, b1, a2, c1 = (schedule.add(key) for key in ("a", "b", "a", "c"))
    assert started(schedule) == [a1, b1, c1]  # a2 waits for a1, c1 passes it
    schedule.finish(b1)
    assert started(schedule) == []
    schedule.finish(a1)
    assert started(schedule) == [a2]
    schedule.finish(a2)
    schedule.finish(c1)
    assert schedule.idle()


def test_a_later_part_never_overtakes_an_earlier_one_of_its_namespace() -> None:
    schedule = lanes.Lanes()
    a1 = schedule.add("a")
    assert started(schedule) == [a1]
    a2, a3 = schedule.add("a"), schedule.add("a")
    schedule.finish(a1)
    assert started(schedule) == [a2]
    schedule.finish(a2)
    assert started(schedule) == [a3]


def test_a_barrier_waits_for_everything_before_and_holds_everything_after() -> None:
    schedule = lanes.Lanes()
    a1, barrier, b1 = schedule.add("a"), schedule.add(None), schedule.add("b")
    assert started(schedule) == [a1]
    schedule.finish(a1)
    assert started(schedule) == [barrier]  # alone
    schedule.finish(barrier)
    assert started(schedule) == [b1]
    schedule.finish(b1)
    assert schedule.idle()


def test_random_schedules_keep_the_rules_and_run_everything() -> None:
    rng = random.Random(7)
    for _ in range(300):
        schedule = lanes.Lanes()
        keys: list[Hashable | None] = [
            None if rng.random() < 0.1 else rng.choice("abcde") for _ in range(rng.randrange(30))
        ]
        tasks = [schedule.add(key) for key in keys]
        running: list[int] = []
        order: list[int] = []
        while not schedule.idle():
            now = started(schedule)
            order += now
            running += now
            assert running, "nothing runs though tasks wait"
            busy = [keys[t] for t in running]
            if None in busy:
                assert len(running) == 1  # a barrier runs alone
            assert len(busy) == len(set(busy))  # one part per namespace at a time
            done = running.pop(rng.randrange(len(running)))
            schedule.finish(done)
        assert sorted(order) == tasks
        for key in set(keys):  # each namespace's parts started in the order sent
            lane = [t for t in order if keys[t] == key]
            assert lane == sorted(lane)
        for t in (t for t in tasks if keys[t] is None):  # nothing crosses a barrier
            position = order.index(t)
            assert sorted(order[:position]) == list(range(t))
