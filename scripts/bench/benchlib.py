"""Shared helpers of the benchmarks in scripts/bench: percentiles, targets, the result line.

Every benchmark prints human-readable figures and, last, one line `RESULT {json}` with the
same figures, so `scripts/bench.sh` can collect them and `tests/e2e/test_bench_quick.py`
can check the shape of each benchmark's output in `--quick` mode.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from agent import store
from agent.k8s import watch

BACKENDS = ("nftables", "iptables")


def common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="nftables",
        help="dataplane backend, passed through to the agent (--backend)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a CI smoke test")


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile by nearest rank (q=0.99: p99); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": statistics.median(values) if values else float("nan"),
        "p99": pct(values, 0.99),
        "max": max(values) if values else float("nan"),
    }


def target(name: str, measured: str, met: bool, goal: str) -> dict[str, Any]:
    """One target (a goal a benchmark checks), printed and reported as met or not with its
    measured figure."""
    verdict = "MET" if met else "NOT MET"
    print(f"  target {name}: {goal}; measured {measured} -> {verdict}")
    return {"target": name, "goal": goal, "measured": measured, "met": met}


def result(benchmark: str, args: argparse.Namespace, **figures: Any) -> None:
    payload = {"benchmark": benchmark, "backend": args.backend, "quick": args.quick, **figures}
    print("RESULT " + json.dumps(payload, sort_keys=True, default=str))


def store_of(objs: Sequence[dict[str, Any]]) -> store.Store:
    """A store loaded from API objects (Namespaces, Pods, NetworkPolicies) as one relist per
    kind, as an agent's start does."""
    by_kind = {"Namespace": "namespaces", "Pod": "pods", "NetworkPolicy": "networkpolicies"}
    st = store.Store()
    for kind in store.KINDS:
        items = [o for o in objs if by_kind.get(o["kind"]) == kind]
        st.apply(watch.Relist(kind, items, "1", time.monotonic()), store.Change())
    return st


_PERCENTILE = re.compile(r"percentile (\d+\.\d+) =\s+([\d.]+)")


def sockperf_ping_pong(
    prefix: Sequence[str], ip: str, port: int, seconds: float
) -> tuple[float, float]:
    """TCP round-trip p50 and p99 (us) of `sockperf ping-pong` run behind `prefix` (the
    command that enters the client's namespace) against a sockperf server at ip:port."""
    done = subprocess.run(
        [
            *prefix,
            *("sockperf", "ping-pong", "--tcp", "-i", ip, "-p", str(port)),
            *("-t", str(seconds), "-m", "64"),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    )
    found = {float(q): float(v) for q, v in _PERCENTILE.findall(done.stdout + done.stderr)}
    if 50.0 not in found or 99.0 not in found:
        raise RuntimeError(
            f"sockperf gave no percentiles: {done.stdout[-400:]}{done.stderr[-400:]}"
        )
    return found[50.0], found[99.0]


def iperf_gbps(prefix: Sequence[str], ip: str, port: int, seconds: float) -> float:
    """TCP throughput (Gbit/s) of an iperf3 client run behind `prefix` against ip:port."""
    done = subprocess.run(
        [*prefix, "iperf3", "-c", ip, "-p", str(port), "-t", str(seconds), "-J"],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    )
    report = json.loads(done.stdout)
    if "error" in report:
        raise RuntimeError(f"iperf3: {report['error']}")
    return float(report["end"]["sum_received"]["bits_per_second"]) / 1e9
