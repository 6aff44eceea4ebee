"""How the worker answers a line (`agent.dataplane.worker.Worker.answer`): a line that does not
read is answered with a ProtocolError and the next one as usual; a batch of quick parts (small
element patches, generation reads, pings, read-backs) runs on the reading thread, any other
through the pool. No root: the handlers that would enter namespaces are stand-ins that note
their thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agent.dataplane import protocol, worker


@pytest.fixture
def answered(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """Each handled request's op and thread, in the order handled."""
    seen: list[tuple[str, int]] = []

    def stand_in(reply: Any) -> worker.Handler:
        def handle(ns: Any, request: protocol.Request[Any]) -> Any:
            seen.append((request.op.value, threading.get_ident()))
            return reply

        return handle

    handlers = dict(worker.HANDLERS)
    handlers[protocol.Op.PATCH] = stand_in(protocol.Patched(True, 2, True))
    handlers[protocol.Op.COMMIT] = stand_in(protocol.Committed(None, 2))
    monkeypatch.setattr(worker, "HANDLERS", handlers)
    yield seen


def _patch(n: int, elements: int = 1) -> protocol.Patch:
    change = protocol.SetChange("ingress_tcp_8080_v4", 4, "any", (), ((1, 1),) * elements)
    return protocol.Patch(f"/run/netns/psg-never-{n}", None, "", 1, (change,), "fp")


def test_an_unreadable_line_is_answered_and_the_next_one_as_usual() -> None:
    w = worker.Worker(threads=2)
    for garbled in (b"\x00\xff{\n", b'[2, 6, "patch", {"path": "/x"}]\n', b'[9, 6, "ping", {}]\n'):
        reply = protocol.read_reply(protocol.Ping(), 6, w.answer(garbled))
        assert isinstance(reply, protocol.ProtocolError)
    pong = protocol.read_reply(
        protocol.Ping(), 7, w.answer(protocol.request_line(7, protocol.Ping()))
    )
    assert isinstance(pong, protocol.Pong) and pong.contexts == 0


def test_a_batch_of_quick_parts_runs_on_the_reading_thread_in_order(
    answered: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    w = worker.Worker(threads=2)

    def no_pool(jobs: Any) -> Any:
        raise AssertionError("a quick batch went through the pool")

    monkeypatch.setattr(w.pool, "run", no_pool)
    parts = (_patch(0), protocol.ReadGeneration("/run/netns/psg-never-1", None), _patch(2))
    batch = protocol.Batch(parts)
    got = protocol.read_reply(batch, 1, w.answer(protocol.request_line(1, batch)))
    assert isinstance(got, protocol.BatchReplies)
    assert isinstance(got.replies[0], protocol.Patched) and got.replies[0].seconds > 0
    assert isinstance(got.replies[1], protocol.NetnsGone)  # the real handler: no such path
    assert answered == [("patch", threading.get_ident())] * 2


def test_a_batch_with_a_part_that_is_not_quick_runs_on_the_pool(
    answered: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    w = worker.Worker(threads=2)
    pooled: list[int] = []
    run = w.pool.run

    def spy(jobs: Any) -> Any:
        pooled.append(len(jobs))
        return run(jobs)

    monkeypatch.setattr(w.pool, "run", spy)
    big = _patch(1, worker.QUICK_ELEMENTS + 1)
    for parts in (
        (_patch(0), protocol.Commit("/run/netns/psg-never-1", None, "")),
        (_patch(0), big),
        (_patch(0), protocol.Patch(big.path, None, "flush set inet podseg s", 1)),  # libnftables
    ):
        answered.clear()
        batch = protocol.Batch(parts)
        got = protocol.read_reply(batch, 1, w.answer(protocol.request_line(1, batch)))
        assert isinstance(got, protocol.BatchReplies) and len(got.replies) == 2
        assert len(answered) == 2
    assert pooled == [2, 2, 2]
    assert [worker.quick(p) for p in (_patch(0), big, protocol.Ping(), protocol.Forget(None))] == [
        True,
        False,
        True,
        False,
    ]


def test_a_batch_of_read_backs_runs_on_the_reading_thread_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Glances (first contact) and inspects (resync) through libnftables, one after another:
    from two threads at once its listings were 100x slower in namespaces whose tables a whole
    script had replaced."""
    seen: list[tuple[str, str, int]] = []

    def stand_in(ns: Any, request: Any) -> protocol.Examined:
        seen.append((request.op.value, request.path, threading.get_ident()))
        return protocol.Examined("fp", None, 3)

    handlers = dict(worker.HANDLERS)
    handlers[protocol.Op.GLANCE] = handlers[protocol.Op.INSPECT] = stand_in
    monkeypatch.setattr(worker, "HANDLERS", handlers)
    w = worker.Worker(threads=2)

    def no_pool(jobs: Any) -> Any:
        raise AssertionError("a batch of read-backs went through the pool")

    monkeypatch.setattr(w.pool, "run", no_pool)
    paths = [f"/run/netns/psg-never-{n}" for n in range(6)]
    parts = tuple(
        (protocol.Glance if n % 2 else protocol.Inspect)(path, None) for n, path in enumerate(paths)
    )
    batch = protocol.Batch(parts)
    got = protocol.read_reply(batch, 1, w.answer(protocol.request_line(1, batch)))
    assert isinstance(got, protocol.BatchReplies)
    assert all(isinstance(r, protocol.Examined) and r.fingerprint == "fp" for r in got.replies)
    assert seen == [
        ("inspect" if n % 2 == 0 else "glance", path, threading.get_ident())
        for n, path in enumerate(paths)
    ]
