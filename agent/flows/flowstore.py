"""The per-node flow store: workload edges kept on disk (SQLite), bounded, read by the API.

Why on disk: `podseg flows` shows what talked to what over the last hours or days, before any
policy enforces; that must survive an agent restart (a rollout, a crash) and stay small. The
store holds one row per edge (`agent.flows.edges.EdgeKey`) with its count and its first and
last time seen. Bounds: rows last seen before the retention are removed, and past
`max_flows` rows the least recently seen go (both counted in
`podseg_flow_store_evictions_total`); both run in the same transaction as the write, so the
table never holds more than `max_flows` rows once a write is committed.

The event loop never waits on the disk: `submit` only queues a batch (bounded; a full queue
drops the batch and counts it), and one writer thread owns the write connection, merging the
batches queued meanwhile into one transaction. Queries open their own read-only connection
(WAL: readers do not block the writer) and are meant to run in a thread
(`asyncio.to_thread`). A store that cannot be opened logs one line and counts
`podseg_flow_store_errors_total{op="open"}`; `open` returns None and the agent goes on
enforcing without it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from agent import metrics
from agent.flows import edges

log = structlog.get_logger(__name__)

DEFAULT_PATH = "/var/lib/podseg/flows.sqlite"
DEFAULT_RETENTION = 7 * 86400.0
DEFAULT_MAX_FLOWS = 50000
QUEUE_BATCHES = 256
QUERY_LIMIT = 100000
EXPIRE_EVERY = 60.0  # seconds without a batch after which the writer expires old flows anyway

_COLUMNS = (
    "src_namespace",
    "src_workload",
    "src_external",
    "dst_namespace",
    "dst_workload",
    "dst_external",
    "protocol",
    "port",
    "verdict",
)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS flows (
    {", ".join(f"{c} {'INTEGER' if c == 'port' else 'TEXT'} NOT NULL" for c in _COLUMNS)},
    count INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY ({", ".join(_COLUMNS)})
);
CREATE INDEX IF NOT EXISTS flows_last_seen ON flows (last_seen);
"""
_UPSERT = f"""
INSERT INTO flows ({", ".join(_COLUMNS)}, count, first_seen, last_seen)
VALUES ({", ".join("?" for _ in _COLUMNS)}, ?, ?, ?)
ON CONFLICT DO UPDATE SET
    count = count + excluded.count,
    first_seen = min(first_seen, excluded.first_seen),
    last_seen = max(last_seen, excluded.last_seen)
"""
_EVICT = """
DELETE FROM flows WHERE rowid IN (SELECT rowid FROM flows ORDER BY last_seen, rowid LIMIT ?)
"""

Batch = Sequence[tuple[edges.EdgeKey, edges.EdgeStats]]


class StoreError(Exception):
    """The store could not be opened or used (the message says why, for one log line)."""


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class FlowStore:
    def __init__(
        self,
        path: str,
        retention: float = DEFAULT_RETENTION,
        max_flows: int = DEFAULT_MAX_FLOWS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open (create) the store at `path`; `StoreError` when that fails."""
        self.path, self.retention, self.max_flows, self.clock = path, retention, max_flows, clock
        try:
            parent = os.path.dirname(path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            self._conn = _connect(path)
            self._conn.executescript(_SCHEMA)
            self.rows = self._count()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: {exc}") from None
        self._queue: queue.Queue[Batch | None] = queue.Queue(QUEUE_BATCHES)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one writer at a time (thread, or a direct `write`)
        metrics.FLOW_STORE_FLOWS.set(self.rows)

    @classmethod
    def open(
        cls, path: str, retention: float = DEFAULT_RETENTION, max_flows: int = DEFAULT_MAX_FLOWS
    ) -> FlowStore | None:
        """The store with its writer thread running, or None (logged once, counted) when it
        cannot be opened."""
        try:
            store = cls(path, retention, max_flows)
        except StoreError as exc:
            metrics.FLOW_STORE_ERRORS.labels("open").inc()
            log.error("flow_store_unavailable", path=path, error=str(exc), enforcement="on")
            return None
        store.start()
        log.info("flow_store_opened", path=path, flows=store.rows, max_flows=max_flows)
        return store

    # -- writing --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="flow-store", daemon=True)
        self._thread.start()

    def submit(self, batch: Batch) -> bool:
        """Queue `batch` for the writer thread; never blocks. False when the queue is full."""
        if not batch:
            return True
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            metrics.FLOW_STORE_ERRORS.labels("queue_full").inc()
            return False
        return True

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=EXPIRE_EVERY)
            except queue.Empty:  # no flows for a while: still expire the old ones
                self._write_logged([])
                continue
            taken = [first]
            while taken[-1] is not None:  # merge what queued meanwhile into one transaction
                try:
                    taken.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            batches = [b for b in taken if b is not None]
            if batches:
                self._write_logged(list(edges.merge(batches).items()))
            for _ in taken:
                self._queue.task_done()
            if taken[-1] is None:
                return

    def _write_logged(self, batch: Batch) -> None:
        try:
            self.write(batch)
        except Exception as exc:  # a disk problem must never stop the agent
            metrics.FLOW_STORE_ERRORS.labels("write").inc()
            log.warning("flow_store_write_failed", path=self.path, error=str(exc))

    def write(self, batch: Batch) -> None:
        """Upsert `batch`, then expire and evict, in one transaction (synchronous)."""
        started = time.perf_counter()
        now = self.clock()
        rows = [
            (
                k.src_namespace,
                k.src_workload,
                k.src_external,
                k.dst_namespace,
                k.dst_workload,
                k.dst_external,
                k.protocol,
                k.port,
                k.verdict,
                s.count,
                s.first,
                s.last,
            )
            for k, s in batch
        ]
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_UPSERT, rows)
                expired = conn.execute(
                    "DELETE FROM flows WHERE last_seen < ?", (now - self.retention,)
                ).rowcount
                count = self._count()
                capped = 0
                if count > self.max_flows:
                    capped = conn.execute(_EVICT, (count - self.max_flows,)).rowcount
                    count -= capped
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            self.rows = count
        if expired:
            metrics.FLOW_STORE_EVICTIONS.labels("retention").inc(expired)
        if capped:
            metrics.FLOW_STORE_EVICTIONS.labels("cap").inc(capped)
        metrics.FLOW_STORE_FLOWS.set(count)
        metrics.FLOW_STORE_WRITE_SECONDS.observe(time.perf_counter() - started)

    def _count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM flows").fetchone()[0])

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, stop the writer thread, close the connection."""
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=timeout)
            self._thread.join(timeout)
            self._thread = None
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every batch submitted so far is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            if self._thread is None or not self._thread.is_alive():
                return
            time.sleep(0.01)

    # -- reading --------------------------------------------------------------------------
    def query(
        self,
        since: float | None = None,
        verdict: str | None = None,
        namespace: str | None = None,
        limit: int = QUERY_LIMIT,
    ) -> list[dict[str, Any]]:
        """Flows last seen at or after `since` (epoch seconds), of one verdict, touching one
        namespace (either end), most recently seen first; JSON-ready (`flow_json`)."""
        where: list[str] = ["1"]
        args: list[float | str] = []
        if since is not None:
            where.append("last_seen >= ?")
            args.append(since)
        if verdict:
            where.append("verdict = ?")
            args.append(verdict)
        if namespace:
            where.append("(src_namespace = ? OR dst_namespace = ?)")
            args += [namespace, namespace]
        sql = (
            f"SELECT {', '.join(_COLUMNS)}, count, first_seen, last_seen FROM flows "
            f"WHERE {' AND '.join(where)} ORDER BY last_seen DESC LIMIT ?"
        )
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0)
            try:
                rows = conn.execute(sql, [*args, limit]).fetchall()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            metrics.FLOW_STORE_ERRORS.labels("query").inc()
            raise StoreError(f"{self.path}: {exc}") from None
        return [_row_json(row) for row in rows]


@functools.lru_cache(maxsize=4096)
def _iso_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def _iso(epoch: float) -> str:
    """RFC 3339 UTC to the second (flows of one window share their seconds: cached)."""
    return _iso_second(int(epoch))


def _row_json(row: Sequence[Any]) -> dict[str, Any]:
    src_ns, src_wl, src_ext, dst_ns, dst_wl, dst_ext, protocol, port, verdict = row[:9]
    return {
        "src": _end(src_ns, src_wl, src_ext),
        "dst": _end(dst_ns, dst_wl, dst_ext),
        "protocol": protocol,
        "port": None if port == edges.NO_PORT else port,
        "verdict": verdict,
        "count": row[9],
        "first_seen": _iso(row[10]),
        "last_seen": _iso(row[11]),
    }


def _end(namespace: str, workload: str, external: str) -> dict[str, str]:
    if external or not workload:
        return {"external": external}
    return {"namespace": namespace, "workload": workload}


def flow_json(key: edges.EdgeKey, count: int, first: float, last: float) -> dict[str, Any]:
    """One stored flow in the shape of a flow of `agent.flows.graph.to_json`."""
    return {
        "src": _end(key.src_namespace, key.src_workload, key.src_external),
        "dst": _end(key.dst_namespace, key.dst_workload, key.dst_external),
        "protocol": key.protocol,
        "port": None if key.port == edges.NO_PORT else key.port,
        "verdict": key.verdict,
        "count": count,
        "first_seen": _iso(first),
        "last_seen": _iso(last),
    }
