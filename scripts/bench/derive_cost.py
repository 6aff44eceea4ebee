"""Benchmark: the agent's own cost of a label flip's patch, per affected pod, without a kernel:
`Backend.derive` (the new programme, its fingerprint and the element patch from the last one)
on both backends, and the memory the kept programmes hold.

Fixture: `flip_latency.py`'s broad peers (10,000 remote pods; 5 local pods selected by its two
broad policies, about 1,000 canonical address ranges each) plus 100 policies of
`time_to_enforce.py` (10 of them select the local pods: one team x one role on one port each),
so a pod carries a dozen policies' counting sets. Each flip moves a team-t0 pod across the
first broad policy's role window (as `flip_latency.py`), the incremental calculator gives the 5
changed rulesets, and each backend derives each pod's programme from its last one (timed one
by one). Kept memory: `tracemalloc`'s growth from rendering the 5 pods' programmes (and
keeping them), render caches cleared first, per backend.

`--baseline DIR` runs the same measurement with another checkout's `agent` package (a child
process with DIR on PYTHONPATH), alternating rounds with this one, and prints both medians and
the same-run ratios this / baseline. Pure: no root, no kernel. Prints medians and p99, the
same-run ratio iptables / nftables, the target (nftables derive per pod p50 <= 0.3 ms) as
MET / NOT MET, then `RESULT {json}`. Usage:
  .venv/bin/python scripts/bench/derive_cost.py [--rounds 3] [--flips 40] [--baseline DIR]
      [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
import tracemalloc
from typing import Any

import benchlib
import flip_latency
import time_to_enforce as tte

from agent import store
from agent.calc import incremental
from agent.dataplane import backends
from agent.dataplane.nft import render as render_nft
from agent.k8s import watch

IFACES = ("eth0",)
# A flip's budget (p50 5 ms for 5 pods): calculation about 1 ms, the worker about 0.5 ms a
# namespace, so the derive gets at most 0.3 ms a pod.
DERIVE_GOAL_MS = 0.3
BACKENDS = ("nftables", "iptables")


def measure(remote_pods: int, flips: int) -> dict[str, Any]:
    """One round in this process: per-pod derive milliseconds and kept bytes per backend."""
    objs = [
        *(tte.app_namespace(a) for a in range(10)),
        *(tte.remote_namespace(n) for n in range(tte.REMOTE_NAMESPACES)),
        *(tte.remote_pod(j) for j in range(remote_pods)),
        flip_latency.broad_policy("wide-a", ["t0", "t1", "t2"], range(*flip_latency.WINDOW)),
        flip_latency.broad_policy("wide-b", ["t3", "t4", "t5"], range(10, 50)),
        *(tte.policy(i, 1) for i in range(100)),
        *(
            tte.local_pod(10 * k, f"198.18.0.{k + 2}", 1, flip_latency.NODE)
            for k in range(flip_latency.LOCAL_PODS)
        ),
    ]
    st = benchlib.store_of(objs)
    calc = incremental.Calculator.of(
        flip_latency.NODE,
        pods=st.pods,
        namespaces=st.namespaces,
        policies=st.policies,
        nodes=st.nodes,
    )
    rulesets = {k: d.ruleset for k, d in calc.flush().items() if d is not None}
    kept: dict[str, int] = {}
    programs: dict[tuple[str, str], backends.Program] = {}
    for name in BACKENDS:
        backend = backends.get(name)
        render_nft.clear_caches()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for key, rs in rulesets.items():
            programs[name, key] = backend.render(rs, IFACES)
        kept[name] = (tracemalloc.get_traced_memory()[0] - before) // len(rulesets)
        tracemalloc.stop()
    times: dict[str, list[float]] = {name: [] for name in BACKENDS}
    derived = {name: 0 for name in BACKENDS}
    pods = flip_latency.flippers(remote_pods)
    for n in range(flips):
        j = pods[(n // 2) % len(pods)]
        role = flip_latency.WINDOW[1] if n % 2 == 0 else flip_latency.WINDOW[1] - 1
        change = store.Change()
        event = watch.WatchEvent("pods", "MODIFIED", tte.remote_pod(j, role), time.monotonic())
        st.apply(event, change)
        for key in change.pods:
            calc.set_pod(key, st.pods.get(key))
        changed = {k: d.ruleset for k, d in calc.flush().items() if d is not None}
        for name in BACKENDS:
            backend = backends.get(name)
            for key, rs in changed.items():
                started = time.perf_counter()
                program = backend.derive(rulesets[key], programs[name, key], rs, IFACES)
                times[name].append((time.perf_counter() - started) * 1000)
                derived[name] += program.patch is not None
                programs[name, key] = program
        rulesets.update(changed)
    return {"times": times, "kept": kept, "derived": derived}


def run_child(directory: str | None, args: argparse.Namespace) -> dict[str, Any]:
    """One round in a child process, with DIR's `agent` package when `directory` is set."""
    env = dict(os.environ)
    if directory is not None:
        env["PYTHONPATH"] = str(pathlib.Path(directory).resolve())
    command = [sys.executable, __file__, "--child", "--flips", str(args.flips)]
    command += ["--remote-pods", str(args.remote_pods)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("CHILD "))
    result: dict[str, Any] = json.loads(line[len("CHILD ") :])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    benchlib.common_args(parser)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flips", type=int, default=40)
    parser.add_argument("--remote-pods", type=int, default=10_000)
    parser.add_argument("--baseline", default=None, help="another checkout, same run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.flips, args.remote_pods = 1, 4, 4_000
    if args.child:
        print("CHILD " + json.dumps(measure(args.remote_pods, args.flips)))
        return 0
    sides = {"this": None, **({"baseline": args.baseline} if args.baseline else {})}
    rounds: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    print(f"derive cost: {args.rounds} rounds of {args.flips} flips, load {os.getloadavg()[0]:.2f}")
    for r in range(args.rounds):
        order = list(sides.items()) if r % 2 == 0 else list(reversed(sides.items()))
        for side, directory in order:
            rounds[side].append(run_child(directory, args))
    print(f"  load average after: {os.getloadavg()[0]:.2f}")
    figures: dict[str, Any] = {}
    for side in sides:
        figures[side] = {}
        for name in BACKENDS:
            times = [t for one in rounds[side] for t in one["times"][name]]
            kept = statistics.median(one["kept"][name] for one in rounds[side])
            derived = sum(one["derived"][name] for one in rounds[side])
            figures[side][name] = {"derive_ms": benchlib.summary(times), "kept_bytes": kept}
            s = figures[side][name]["derive_ms"]
            print(
                f"  {side:8} {name:8} derive per pod p50 {s['median']:.3f} ms, p99 "
                f"{s['p99']:.3f} ms (n={s['n']}, {derived} derived); kept per pod "
                f"{kept / 1024:.0f} KiB"
            )
    if args.baseline:
        ratios = {}
        for name in BACKENDS:
            this, base = figures["this"][name], figures["baseline"][name]
            ratios[name] = {
                "derive_p50": this["derive_ms"]["median"] / base["derive_ms"]["median"],
                "kept": this["kept_bytes"] / base["kept_bytes"],
            }
            print(
                f"  same run, this / baseline, {name}: derive p50 "
                f"{ratios[name]['derive_p50']:.2f}, kept per pod {ratios[name]['kept']:.2f}"
            )
        figures["ratios"] = ratios
    this = figures["this"]
    figures["same_run_ratios"] = {
        "ipt_over_nft": this["iptables"]["derive_ms"]["median"]
        / this["nftables"]["derive_ms"]["median"]
    }
    ratio = figures["same_run_ratios"]["ipt_over_nft"]
    print(f"  same run, iptables / nftables derive p50: {ratio:.1f}")
    nft = this["nftables"]["derive_ms"]
    figures["targets"] = [
        benchlib.target(
            "derive-nft",
            f"p50 {nft['median']:.3f} ms",
            nft["median"] <= DERIVE_GOAL_MS,
            f"nftables derive per affected pod p50 <= {DERIVE_GOAL_MS} ms",
        )
    ]
    benchlib.result("derive_cost", args, **figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
