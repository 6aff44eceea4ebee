"""Benchmark: the dataplane worker's memory after programming big peer sets and shrinking them.

Programs `--pods` pods (110, the kubelet's default limit) in real network namespaces
(`psg-<random6>-wm<n>`, deleted at the end) through one real dataplane worker: first with
`--big` peer elements each (ingress and egress, distinct addresses so that none merge), read
back once (`inspect`, as a resync does), then with `--small` elements each, read back again,
after a first round with `--small` elements (libraries loaded, contexts open: the baseline).
After each step it reads the proportional set size (PSS) of the worker's whole process tree
(the worker and any child it runs) from /proc/<pid>/smaps_rollup.

Prints PSS at start, at the baseline, with the big sets and after shrinking, then the target
(after shrinking, the worker holds at most 1 MiB or 10% of the peak growth over its baseline:
memory follows the sets it still needs) as MET / NOT MET, then `RESULT {json}`.
Needs root. Usage:
  .venv/bin/python scripts/bench/worker_memory.py [--backend nftables] [--quick]
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

from agent.calc import ruleset
from agent.dataplane import backends, netns, protocol
from agent.dataplane import client as dp_client

BASE = 0xC6130000  # 198.19.0.0: peer addresses, every other one (no two merge)
KEPT_FLOOR_KIB, KEPT_SHARE = 1024, 0.1


def pss_kib(pid: int) -> int:
    """PSS of `pid` and its descendants (KiB)."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            continue
    return total


def peers(n: int, offset: int) -> tuple[ruleset.AddrRange, ...]:
    return tuple(
        ruleset.AddrRange(4, BASE + offset + 2 * i, BASE + offset + 2 * i) for i in range(n)
    )


def pod_ruleset(k: int, n: int) -> ruleset.PodRuleset:
    direction = ruleset.DirectionRuleset(
        isolated=True, any_port_peers=peers(n, k % 7), policies=("bench/wide",)
    )
    return ruleset.PodRuleset("bench", f"p{k}", ingress=direction, egress=direction)


def make_netns(names: list[str]) -> None:
    for name in names:
        for args in (
            ("netns", "add", name),
            ("-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"),
            ("-n", name, "link", "set", "eth0", "up"),
        ):
            subprocess.run(["ip", *args], capture_output=True, check=True)


async def program(
    client: dp_client.WorkerClient,
    backend: backends.Backend,
    targets: list[netns.Target],
    size: int,
) -> float:
    """Commit every pod's ruleset with `size` elements, then read every namespace back;
    seconds taken."""
    started = time.perf_counter()
    commits: list[protocol.Request[Any]] = [
        backend.commit_request(t, backend.render(pod_ruleset(k, size), t.interfaces))
        for k, t in enumerate(targets)
    ]
    reads: list[protocol.Request[Any]] = [backend.examine_request(t) for t in targets]
    for reply in await client.batch(commits) + await client.batch(reads):
        if isinstance(reply, protocol.DataplaneError):
            raise reply
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> dict[str, Any]:
    names = [f"psg-{secrets.token_hex(3)}-wm{n}" for n in range(args.pods)]
    backend = backends.get(args.backend)
    client = dp_client.WorkerClient(timeout=120)
    try:
        make_netns(names)
        targets = [
            netns.Target(f"/run/netns/{n}", os.stat(f"/run/netns/{n}").st_ino, ("eth0",))
            for n in names
        ]
        pid = (await client.call(protocol.Ping())).pid
        cold = pss_kib(pid)
        await program(client, backend, targets, args.small)  # warm: libraries, contexts
        start = pss_kib(pid)
        big_s = await program(client, backend, targets, args.big)
        big = pss_kib(pid)
        small_s = await program(client, backend, targets, args.small)
        shrunk = pss_kib(pid)
    finally:
        await client.close()
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    kept = shrunk - start
    goal_kib = max(KEPT_FLOOR_KIB, KEPT_SHARE * max(0, big - start))
    print(
        f"worker ({args.backend}), {args.pods} pods: PSS at start {cold / 1024:.1f} MiB, with "
        f"{args.small} elements per direction {start / 1024:.1f} MiB; with "
        f"{args.big} elements per direction {big / 1024:.1f} MiB ({big_s:.1f} s); after "
        f"shrinking to {args.small} {shrunk / 1024:.1f} MiB ({small_s:.1f} s); kept "
        f"{kept / 1024:.1f} MiB over the baseline"
    )
    target = benchlib.target(
        "worker-memory",
        f"{kept / 1024:.1f} MiB kept (peak growth {(big - start) / 1024:.1f} MiB)",
        kept <= goal_kib,
        f"after shrinking, PSS over the baseline <= max({KEPT_FLOOR_KIB // 1024} MiB, "
        f"{KEPT_SHARE:.0%} of the peak growth)",
    )
    return {
        "pss_mib": {
            "cold": cold / 1024,
            "start": start / 1024,
            "big": big / 1024,
            "shrunk": shrunk / 1024,
        },
        "kept_mib": kept / 1024,
        "targets": [target],
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    benchlib.common_args(parser)
    parser.add_argument("--pods", type=int, default=110)
    parser.add_argument("--big", type=int, default=5000, help="elements per direction")
    parser.add_argument("--small", type=int, default=10)
    args = parser.parse_args()
    if args.quick:
        args.pods, args.big = 10, 1000
    figures = asyncio.run(run(args))
    benchlib.result("worker_memory", args, **figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
