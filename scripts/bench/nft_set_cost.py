"""Benchmark: what the kernel costs to change one element of an nftables set, by the kind of
set (how the kernel keeps it) and its size, through the worker's own netlink path.

Why: a peer flip's kernel time is the set changes of its transaction. Three kinds, each filled
with N address ranges (or single addresses for the hash set), in one throwaway namespace:

* `pipapo`: `ipv4_addr . inet_proto . inet_service`, flags interval (the layout before the
  port-spec sets: `range . tcp . 8080`);
* `rbtree`: `ipv4_addr`, flags interval (a port spec's address set, and the `any` sets);
* `hash`: `ipv4_addr . inet_proto . inet_service` without flags (the `exact` sets).

Each sample is one transaction as `agent.dataplane.nft.setelem` builds it (the `state` rule
replaced, one element deleted, one added), sent and acknowledged as the worker sends it
(`agent.dataplane.worker.nft._send_batch`); medians and p99 per kind and size, the same-run
ratio pipapo / rbtree, and the target: a change of the kinds the peer sets use (rbtree, hash)
costs <= 1 ms at the largest size. Prints `RESULT {json}` last. Needs root. Usage:
  .venv/bin/python scripts/bench/nft_set_cost.py [--sizes 100,1000,6100] [--samples 21] [--quick]
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import subprocess
import sys
import time
from typing import Any

import benchlib

from agent.dataplane import protocol
from agent.dataplane.nft import setelem
from agent.dataplane.worker import nft as worker_nft

KINDS = ("pipapo", "rbtree", "hash")
GOAL_MS = 1.0
NETLINK_NETFILTER = 12
_BASE = (198 << 24) | (18 << 16)


def _ip(n: int) -> str:
    return f"{n >> 24}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def _table(n: int) -> str:
    """The table: three sets of `n` elements (ranges of two addresses, 4 apart)."""
    ranges = [(_BASE + 4 * i, _BASE + 4 * i + 1) for i in range(n)]
    pipapo = ", ".join(f"{_ip(a)}-{_ip(b)} . tcp . 8080" for a, b in ranges)
    rbtree = ", ".join(f"{_ip(a)}-{_ip(b)}" for a, b in ranges)
    hashed = ", ".join(f"{_ip(a)} . tcp . 8080" for a, _ in ranges)
    concat = "ipv4_addr . inet_proto . inet_service"
    return (
        "table inet podseg\ndelete table inet podseg\ntable inet podseg {\n"
        f"  set pipapo {{ type {concat}; flags interval; elements = {{ {pipapo} }}; }}\n"
        f"  set rbtree {{ type ipv4_addr; flags interval; elements = {{ {rbtree} }}; }}\n"
        f"  set hash {{ type {concat}; elements = {{ {hashed} }}; }}\n"
        '  chain state { return comment "podseg state=0000000000000000"; }\n'
        "}\n"
    )


def _change(kind: str, old: tuple[int, int], new: tuple[int, int]) -> protocol.SetChange:
    if kind == "rbtree":
        return protocol.SetChange(kind, 4, "any", (old,), (new,))
    if kind == "hash":
        return protocol.SetChange(
            kind, 4, "exact", ((old[0], old[0], 6, 8080, 8080),), ((new[0], new[0], 6, 8080, 8080),)
        )
    return protocol.SetChange(kind, 4, "ports", ((*old, 6, 8080, 8080),), ((*new, 6, 8080, 8080),))


def inside(sizes: list[int], samples: int) -> dict[str, dict[str, list[float]]]:
    """Run in the namespace: milliseconds per transaction, by kind and size."""
    out: dict[str, dict[str, list[float]]] = {kind: {} for kind in KINDS}
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.bind((0, 0))
    seq = 1
    for n in sizes:
        subprocess.run(["nft", "-f", "-"], input=_table(n), text=True, check=True)
        middle = (_BASE + 4 * (n // 2), _BASE + 4 * (n // 2) + 1)
        outside = (_BASE + 4 * n + 8, _BASE + 4 * n + 9)
        for kind in KINDS:
            times = []
            for k in range(samples):
                old, new = (middle, outside) if k % 2 == 0 else (outside, middle)
                seq += 1
                data, acked = setelem.batch(
                    "podseg",
                    "state",
                    f"podseg state={k:016x}",
                    (_change(kind, old, new),),
                    seq << 12,
                )
                started = time.perf_counter()
                worker_nft._send_batch(data, acked, sock)
                times.append((time.perf_counter() - started) * 1000)
            out[kind][str(n)] = times
    subprocess.run(["nft", "delete", "table", "inet", "podseg"], check=True)
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="100,1000,6100")
    parser.add_argument("--samples", type=int, default=21)
    parser.add_argument("--quick", action="store_true", help="small sizes: a CI smoke test")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.samples = "100,1000", 5
    args.backend = "nftables"
    return args


def main() -> int:
    args = parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.inside:
        print(json.dumps(inside(sizes, args.samples)))
        return 0
    name = f"psg-{secrets.token_hex(3)}-sc"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, __file__, "--inside",
             "--sizes", args.sizes, "--samples", str(args.samples)],
            capture_output=True, text=True, check=True, timeout=600,
        )  # fmt: skip
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
    found: dict[str, dict[str, list[float]]] = json.loads(done.stdout.splitlines()[-1])
    figures: dict[str, dict[str, Any]] = {
        kind: {size: benchlib.summary(times) for size, times in by_size.items()}
        for kind, by_size in found.items()
    }
    print(f"one element deleted and one added, one transaction, {args.samples} samples")
    for kind in KINDS:
        row = "; ".join(
            f"{size}: p50 {f['median']:.3f} ms, p99 {f['p99']:.3f} ms"
            for size, f in figures[kind].items()
        )
        print(f"  {kind:7s} {row}")
    largest = str(sizes[-1])
    ratio = figures["pipapo"][largest]["median"] / max(1e-9, figures["rbtree"][largest]["median"])
    print(f"  same run (p50, {largest} elements): pipapo / rbtree = {ratio:.0f}x")
    used = max(figures[k][largest]["median"] for k in ("rbtree", "hash"))
    targets = [
        benchlib.target(
            "set-change",
            f"{used:.3f} ms",
            used <= GOAL_MS,
            f"one peer change in a {largest}-element peer set (rbtree, hash) p50 <= {GOAL_MS} ms",
        )
    ]
    benchlib.result(
        "nft_set_cost",
        args,
        sizes=sizes,
        kinds=figures,
        same_run_ratios={"pipapo_over_rbtree": ratio},
        targets=targets,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
