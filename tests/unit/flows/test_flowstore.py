"""The per-node flow store on a real SQLite file: upserts merge counts and times, retention
and the row cap evict the least recently seen, a reopened store has everything, the writer
thread merges queued batches, and a store that cannot be opened is None (logged, counted)."""

from __future__ import annotations

import os
import pathlib
import sqlite3
import time

import pytest

from agent import metrics
from agent.flows import edges, flowstore


def edge(n: int, verdict: str = "allowed", namespace: str = "shop") -> edges.EdgeKey:
    return edges.EdgeKey(namespace, f"w{n}", "", "shop", "db", "", "TCP", 5432, verdict)


def batch(
    keys: list[edges.EdgeKey], first: float, last: float, count: int = 1
) -> list[tuple[edges.EdgeKey, edges.EdgeStats]]:
    return [(k, edges.EdgeStats(count, first, last)) for k in keys]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rows(path: pathlib.Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM flows").fetchone()[0])
    finally:
        conn.close()


def sample(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels or None)
    return value or 0.0


def test_upsert_merges_and_query_filters(tmp_path: pathlib.Path) -> None:
    store = flowstore.FlowStore(str(tmp_path / "f.sqlite"), clock=Clock(1000.0))
    store.write(batch([edge(1), edge(2, "dropped", "tools")], 100.0, 110.0, 2))
    store.write(batch([edge(1)], 50.0, 200.0, 3))
    (first,) = store.query(verdict="allowed")
    assert first == {
        "src": {"namespace": "shop", "workload": "w1"},
        "dst": {"namespace": "shop", "workload": "db"},
        "protocol": "TCP",
        "port": 5432,
        "verdict": "allowed",
        "count": 5,
        "first_seen": "1970-01-01T00:00:50Z",
        "last_seen": "1970-01-01T00:03:20Z",
    }
    assert [f["src"]["workload"] for f in store.query(namespace="tools")] == ["w2"]
    assert [f["src"]["workload"] for f in store.query(since=150.0)] == ["w1"]
    assert len(store.query()) == 2
    store.close()


def test_flood_never_grows_past_the_cap_and_evicts_least_recently_seen(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "f.sqlite"
    before = sample("podseg_flow_store_evictions_total", reason="cap")
    store = flowstore.FlowStore(str(path), max_flows=500, clock=Clock(10_000.0))
    store.start()
    for round_ in range(40):  # 40 x 100 distinct new flows through the thread
        keys = [edge(round_ * 100 + i) for i in range(100)]
        assert store.submit(batch(keys, 9000.0 + round_, 9000.0 + round_))
        if round_ % 10 == 9:
            store.flush()
            assert rows(path) <= 500
    store.close()
    assert rows(path) == 500
    assert sample("podseg_flow_store_flows") == 500
    assert sample("podseg_flow_store_evictions_total", reason="cap") - before == 3500
    kept = {int(f["src"]["workload"][1:]) for f in flowstore.FlowStore(str(path)).query()}
    assert kept == set(range(3500, 4000))  # the most recently seen ones


def test_retention_expires_flows_not_seen_since(tmp_path: pathlib.Path) -> None:
    clock = Clock(10_000.0)
    store = flowstore.FlowStore(str(tmp_path / "f.sqlite"), retention=3600.0, clock=clock)
    store.write(batch([edge(1)], 5000.0, 6000.0))  # last seen 4000 s ago: already expired
    store.write(batch([edge(2)], 9000.0, 9500.0))
    assert [f["src"]["workload"] for f in store.query()] == ["w2"]
    clock.now = 9500.0 + 3601.0
    store.write([])
    assert store.query() == [] and store.rows == 0
    store.close()


def test_flows_survive_a_restart(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "sub" / "f.sqlite")  # the directory is created
    first = flowstore.FlowStore.open(path)  # the real clock: write recent flows
    assert first is not None
    now = time.time()
    first.submit(batch([edge(1), edge(2)], now - 60, now - 60))
    first.close()
    again = flowstore.FlowStore(path)
    assert again.rows == 2
    again.write(batch([edge(1)], now, now))
    assert sorted((f["src"]["workload"], f["count"]) for f in again.query()) == [
        ("w1", 2),
        ("w2", 1),
    ]
    again.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only modes")
def test_an_unwritable_path_is_no_store_and_no_crash(tmp_path: pathlib.Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    before = sample("podseg_flow_store_errors_total", op="open")
    assert flowstore.FlowStore.open(str(locked / "f.sqlite")) is None
    assert sample("podseg_flow_store_errors_total", op="open") - before == 1


def test_a_path_that_cannot_be_a_database_is_no_store(tmp_path: pathlib.Path) -> None:
    """Also as root: a path under a regular file can never be created."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    before = sample("podseg_flow_store_errors_total", op="open")
    assert flowstore.FlowStore.open(str(blocker / "f.sqlite")) is None
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database at all" * 100)
    assert flowstore.FlowStore.open(str(garbage)) is None
    assert sample("podseg_flow_store_errors_total", op="open") - before == 2


def test_the_writer_expires_old_flows_even_when_no_flow_arrives(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flowstore, "EXPIRE_EVERY", 0.05)
    clock = Clock(10_000.0)
    store = flowstore.FlowStore(str(tmp_path / "f.sqlite"), retention=100.0, clock=clock)
    store.write(batch([edge(1)], 9990.0, 9990.0))
    store.start()
    assert store.rows == 1
    clock.now = 20_000.0
    deadline = time.monotonic() + 10
    while store.rows and time.monotonic() < deadline:
        time.sleep(0.01)
    store.close()
    assert store.rows == 0 and rows(tmp_path / "f.sqlite") == 0


def test_a_failed_write_is_counted_and_the_writer_goes_on(tmp_path: pathlib.Path) -> None:
    store = flowstore.FlowStore(str(tmp_path / "f.sqlite"), clock=Clock(1000.0))
    store.start()
    before = sample("podseg_flow_store_errors_total", op="write")
    store._conn.execute("PRAGMA query_only = ON")  # every write now fails
    assert store.submit(batch([edge(1)], 999.0, 999.0))
    store.flush()
    assert sample("podseg_flow_store_errors_total", op="write") - before == 1
    store._conn.execute("PRAGMA query_only = OFF")
    assert store.submit(batch([edge(2)], 999.0, 999.0))
    store.flush()
    assert [f["src"]["workload"] for f in store.query()] == ["w2"]
    store.close()
