"""Benchmark: the per-node flow store (`agent.flows.flowstore`) at its cap.

No root, no kernel: a real SQLite file in a temporary directory. The store is filled to its
cap (`--max-flows`, default 50,000 rows, the agent's default), then each round writes one
batch of 1,000 flows as the writer thread does (`FlowStore.write`: upsert, retention, cap
eviction, in one transaction): half of them flows already stored (count and last-seen
updates), half new ones (each evicting the least recently seen row). Then the query the local
API answers for `podseg flows` (every row: 50,000) is timed.
Prints median and p99 per batch write and per full query, the rows after each round (never
above the cap), then the target (batch write p99 <= 100 ms) as MET / NOT MET, then
`RESULT {json}`.
Usage:
  .venv/bin/python scripts/bench/flow_store.py [--rounds 30] [--max-flows 50000] [--quick]
"""

from __future__ import annotations

import argparse
import pathlib
import random
import tempfile
import time

import benchlib

from agent.flows import edges, flowstore

BATCH = 1000


def key(n: int) -> edges.EdgeKey:
    return edges.EdgeKey(
        f"ns{n % 97}", f"w{n}", "", f"ns{n % 89}", f"d{n % 1000}", "", "TCP", n % 65536, "allowed"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    benchlib.common_args(parser)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--max-flows", type=int, default=flowstore.DEFAULT_MAX_FLOWS)
    args = parser.parse_args()
    rounds, cap = (5, 5000) if args.quick else (args.rounds, args.max_flows)
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="psg-bench-flows-") as tmp:
        path = str(pathlib.Path(tmp) / "flows.sqlite")
        now = [time.time()]
        store = flowstore.FlowStore(path, max_flows=cap, clock=lambda: now[0])
        next_key = 0
        for start in range(0, cap, BATCH):  # fill to the cap
            size = min(BATCH, cap - start)
            batch = [(key(next_key + i), edges.EdgeStats(1, now[0], now[0])) for i in range(size)]
            store.write(batch)
            next_key += size
        print(f"flow store filled: {store.rows} rows (cap {cap})")
        writes: list[float] = []
        rows_after: list[int] = []
        for _ in range(rounds):
            now[0] += 1.0
            old = [key(rng.randrange(next_key - cap, next_key)) for _ in range(BATCH // 2)]
            new = [key(next_key + i) for i in range(BATCH // 2)]
            next_key += BATCH // 2
            batch = [(k, edges.EdgeStats(1, now[0], now[0])) for k in dict.fromkeys(old + new)]
            started = time.perf_counter()
            store.write(batch)
            writes.append((time.perf_counter() - started) * 1000)
            rows_after.append(store.rows)
        queries: list[float] = []
        returned = 0
        for _ in range(max(3, rounds // 5)):
            started = time.perf_counter()
            returned = len(store.query())
            queries.append((time.perf_counter() - started) * 1000)
        store.close()
    write, query = benchlib.summary(writes), benchlib.summary(queries)
    print(
        f"batch write of {BATCH} flows at the cap: median {write['median']:.1f} ms, "
        f"p99 {write['p99']:.1f} ms (n={write['n']})"
    )
    print(
        f"query of every row ({returned} flows): median {query['median']:.1f} ms, "
        f"p99 {query['p99']:.1f} ms (n={query['n']})"
    )
    print(f"rows after each write: max {max(rows_after)} (cap {cap})")
    targets = [
        benchlib.target(
            "flow-store-write",
            f"p99 {write['p99']:.1f} ms",
            write["p99"] <= 100.0 and max(rows_after) <= cap,
            f"a {BATCH}-flow batch write at the cap: p99 <= 100 ms, rows never above the cap",
        )
    ]
    benchlib.result(
        "flow_store",
        args,
        cap=cap,
        batch=BATCH,
        write_ms=write,
        query_ms=query,
        query_rows=returned,
        max_rows=max(rows_after),
        targets=targets,
    )


if __name__ == "__main__":
    main()
