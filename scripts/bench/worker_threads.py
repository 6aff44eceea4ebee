"""Benchmark: the dataplane worker's batch of whole-ruleset commits on one thread against
several (`--dataplane-threads`), same run, alternating rounds.

Fixture: `--pods` real network namespaces (`psg-<random6>-wt<k>`, an `eth0` each, deleted at
the end), each pod's ruleset ingress from `--elements` single addresses (every other one of
198.18.0.0/15, shifted per pod: no two pods alike), the size of a pod with broad peers at cold
start (about 6,000 set elements). Two real worker processes run side by side, one started
with 1 thread and one with `--threads` (default 2); each round sends every pod's commit (the
table replaced whole, as at cold start) to each worker in one batch, the order of the two
rotating per round, and times the round trip (the agent's view) and the worker's own time
summed over the parts. Both workers program the same namespaces (a commit replaces the table
whatever holds it). The parts' summed time above the round trip shows they overlapped.

Prints medians and p99 per thread count, the same-run ratio (threads / 1 thread, medians) and
the load average before and after; target: the ratio <= 0.65 (two cores, less on a loaded
machine), printed as MET / NOT MET, then `RESULT {json}`. Needs root (and iptables and ipset
for `--backend iptables`). Usage:
  .venv/bin/python scripts/bench/worker_threads.py [--rounds 7] [--pods 16] [--elements 6000]
      [--threads 2] [--backend nftables|iptables] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import time
from typing import Any

import benchlib

from agent.calc import intervals, ruleset
from agent.dataplane import backends, netns, protocol
from agent.dataplane import client as dp_client

RATIO_GOAL = 0.65
BASE = int(intervals.address_range("198.18.0.0").first)


def pod_ruleset(pod: int, elements: int) -> ruleset.PodRuleset:
    first = BASE + pod * 2 * elements
    peers = tuple(ruleset.AddrRange(4, first + 2 * i, first + 2 * i) for i in range(elements))
    ingress = ruleset.DirectionRuleset(isolated=True, any_port_peers=peers, policies=("a/p",))
    return ruleset.PodRuleset("bench", f"p{pod}", ingress=ingress)


def make_netns(names: list[str]) -> None:
    for name in names:
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(
            ["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"],
            check=True,
        )


def load() -> str:
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    backend = backends.get(args.backend)
    names = [f"psg-{secrets.token_hex(3)}-wt{k}" for k in range(args.pods)]
    counts = (1, args.threads)
    clients = {t: dp_client.WorkerClient(timeout=120, threads=t) for t in counts}
    trips: dict[int, list[float]] = {t: [] for t in counts}
    own: dict[int, list[float]] = {t: [] for t in counts}
    try:
        make_netns(names)
        requests = []
        for pod, name in enumerate(names):
            target = netns.Target(f"/run/netns/{name}", os.stat(f"/run/netns/{name}").st_ino, ())
            program = backend.render(pod_ruleset(pod, args.elements), ["eth0"])
            requests.append(backend.commit_request(target, program))
        for client in clients.values():
            await client.batch(requests)  # warm: each worker has its contexts and tables
        for n in range(args.rounds):
            for t in counts if n % 2 == 0 else counts[::-1]:
                await clients[t].call(protocol.Ping())  # idle, its memory given back
                started = time.perf_counter()
                replies = await clients[t].batch(requests)
                trips[t].append(1000 * (time.perf_counter() - started))
                failed = [r for r in replies if isinstance(r, protocol.DataplaneError)]
                if failed:
                    raise RuntimeError(f"commit failed: {failed[0]}")
                own[t].append(1000 * sum(getattr(r, "seconds", 0.0) for r in replies))
    finally:
        for client in clients.values():
            await client.close()
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return {"trips": trips, "own": own}


def main() -> int:
    parser = argparse.ArgumentParser()
    benchlib.common_args(parser)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--pods", type=int, default=16)
    parser.add_argument("--elements", type=int, default=6000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.pods, args.elements = 2, 4, 300
    before = load()
    print(
        f"worker threads: {args.pods} pods x {args.elements} elements, {args.backend}, "
        f"{args.rounds} rounds, 1 thread against {args.threads}; load average {before}"
    )
    figures = asyncio.run(run(args))
    after = load()
    trips = {t: benchlib.summary(v) for t, v in figures["trips"].items()}
    own = {t: benchlib.summary(v) for t, v in figures["own"].items()}
    for t in trips:
        print(
            f"  {t} thread(s): batch round trip p50 {trips[t]['median']:.1f} ms, p99 "
            f"{trips[t]['p99']:.1f} ms; parts' own time summed p50 {own[t]['median']:.1f} ms"
        )
    ratio = trips[args.threads]["median"] / trips[1]["median"]
    print(f"  same run: {args.threads} threads / 1 thread = {ratio:.2f}; load average {after}")
    target = benchlib.target(
        "worker-threads",
        f"{ratio:.2f}",
        ratio <= RATIO_GOAL,
        f"a batch of whole commits on {args.threads} threads <= {RATIO_GOAL} of one thread's",
    )
    benchlib.result(
        "worker_threads",
        args,
        rounds={str(t): trips[t] for t in trips},
        own={str(t): own[t] for t in own},
        same_run_ratio=ratio,
        load_average=[before, after],
        targets=[target],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
