"""Benchmark: cold start to /readyz and the memory of the agent's process tree, with broad
peers, realistic pod objects and a full node.

Fixture ("broad peers"): 10,000 remote pods as kube-apiserver returns them
(`testbed/objects.realistic_pod`, as `churn.py`) in 100 namespaces (10 teams, 50 roles); 110
local pods in real network namespaces (`l<k>` in app-<k % 10>, app svc-<k % 11>, as
`time_to_enforce.py`); the 1,000 policies of `time_to_enforce.py` (each local pod is selected
by about 9, each allowing one team's namespaces x one role on one port) and, in each of the
10 app namespaces, the two broad policies of `flip_latency.py` selecting every pod there
(namespaceSelector of 3 teams x podSelector of 40 roles: about 2,400 peer pods each).

Each round deletes every podseg table, starts a real `podseg agent` and measures agent start
-> /readyz 200 (every local pod programmed from scratch), with the agent's own split of its
first pass (`reconcile_committed`: compile and kernel), then the PSS of its process tree (agent,
dataplane worker, helper with the drop reader and the change watcher: `smaps_rollup`) at ready
and 3 s later, and from the agent's log its three phases: the start (process, imports, helper
process; the LISTs begin just before its end), the LISTs, the first pass.
`--baseline DIR` alternates each round with one of the agent of another checkout (started in
DIR with DIR on PYTHONPATH: the agent and its children import DIR's `agent` package) and
prints both medians and their ratio, measured in the same run under the same load.
Before the rounds each checkout's `agent` package is compiled to bytecode (`compileall`), as
the image's install does: where PYTHONDONTWRITEBYTECODE is set (the image sets it; so does
this machine) an agent run from a checkout would otherwise compile its modules from source
at every start (about 0.15 s of its start here), which no deployed agent does.
`--profile FILE` runs the last round under cProfile (`python -m cProfile -o FILE`, main
thread only) and prints its top functions; the profiled round is not in the figures.

Targets: cold start median <= 2 s; tree PSS (3 s after ready) <= 150 MiB. Prints them as MET /
NOT MET, then `RESULT {json}`. Needs root.
Usage:
  .venv/bin/python scripts/bench/cold_start.py [--rounds 3] [--backend nftables|iptables]
      [--baseline DIR] [--profile FILE] [--log FILE] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import pathlib
import pstats
import statistics
import subprocess
import sys
import time
from typing import Any

import benchlib
import churn
import flip_latency
import time_to_enforce as tte

from testbed.sandbox import cluster as sandbox_cluster

READY_GOAL_S, PSS_GOAL_MIB = 2.0, 150.0
APPS = 11
SETTLE_S = 3.0
ROOT = pathlib.Path(__file__).resolve().parents[2]  # this checkout


def broad_policy(namespace: int, name: str, teams: list[str], roles: range) -> dict[str, Any]:
    """`flip_latency.broad_policy` in app-<namespace>, selecting every pod there."""
    obj = flip_latency.broad_policy(name, teams, roles)
    obj["metadata"]["namespace"] = f"app-{namespace}"
    obj["spec"]["podSelector"] = {}
    return obj


def build(cluster: sandbox_cluster.SandboxCluster, args: argparse.Namespace) -> None:
    emu = cluster.emulator
    for obj in (
        *(tte.app_namespace(a) for a in range(10)),
        *(tte.remote_namespace(n) for n in range(tte.REMOTE_NAMESPACES)),
        *(tte.policy(i, APPS) for i in range(args.policies)),
        *(broad_policy(a, "wide-a", ["t0", "t1", "t2"], range(0, 40)) for a in range(10)),
        *(broad_policy(a, "wide-b", ["t3", "t4", "t5"], range(10, 50)) for a in range(10)),
    ):
        emu.insert(obj)
    for j in range(args.remote_pods):
        emu.insert(churn.remote(j, (j // 100) % tte.ROLES))
    node = cluster.nodes["node-1"]
    wanted = [(f"app-{k % 10}", f"l{k}") for k in range(args.local_pods)]
    pods = cluster.sandbox.add_pods(node, wanted, ipv6=False, ports=(80,))
    for k, pod in enumerate(pods):
        cluster.pods[pod.key] = pod
        emu.insert(tte.local_pod(k, pod.ipv4, APPS))


def breakdown(pid: int) -> dict[str, float]:
    """PSS (MiB) of each process of the agent's tree, by its module (`-m <name>`)."""
    out: dict[str, float] = {}
    for p in churn.tree_pids(pid):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        name = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-m"), argv[0])
        name = "agent" if p == pid else name
        out[name] = out.get(name, 0.0) + churn.pss_mib(p)
    return out


def one_start(
    cluster: sandbox_cluster.SandboxCluster,
    args: argparse.Namespace,
    profile: str | None,
    tree: str | None = None,
) -> dict[str, Any]:
    """Delete the tables, start an agent (the `agent` package of checkout `tree`, when
    given), wait for ready; its figures. Stops the agent."""
    churn.delete_tables(cluster)
    agent = cluster.agents.get("node-1")
    if agent is not None:
        agent.stop()
    agent = sandbox_cluster.AgentProcess(
        "node-1",
        cluster.kubeconfig,
        ["--backend", args.backend, "--flow-store", str(cluster.workdir / "flows.sqlite")],
        netns_dir=str(cluster.sandbox.netns_dir),
        proc_scan=False,
    )
    if profile is not None:
        agent.command[1:3] = ["-m", "cProfile", "-o", profile, "-m", "agent"]
    cluster.agents["node-1"] = agent
    saved, cwd = os.environ.get("PYTHONPATH"), os.getcwd()
    if tree is not None:  # `python -m agent` and its children import `agent` from there
        os.environ["PYTHONPATH"] = tree
        os.chdir(tree)
    started, wall = time.monotonic(), time.time()
    try:
        agent.start()
    finally:
        os.chdir(cwd)
        if tree is not None:
            if saved is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = saved
    sandbox_cluster.wait_until(agent.ready, 300, "agent ready")
    ready_s = time.monotonic() - started
    pid = agent.pid
    assert pid is not None
    pss_ready = churn.tree_pss_mib(pid)
    agent_ready = churn.pss_mib(pid)
    time.sleep(SETTLE_S)  # the settled figure is PSS some time after ready, by definition
    pss_settled = churn.tree_pss_mib(pid)
    agent_settled = churn.pss_mib(pid)
    processes = breakdown(pid)
    first = next((e for e in agent.events("reconcile_committed") if int(e.get("pods", 0)) > 0), {})
    phases = phases_of(wall, ready_s, agent.events("agent_started")[:1], first)
    agent.stop(timeout=60)
    if args.log:
        with open(args.log, "w") as f:
            f.writelines(agent.raw)
    return {
        "ready_s": ready_s,
        "pss_ready_mib": pss_ready,
        "pss_mib": pss_settled,
        "agent_pss_ready_mib": agent_ready,
        "agent_pss_mib": agent_settled,
        "processes": processes,
        "first_pass_pods": int(first.get("pods", 0)),
        "compile_ms": float(first.get("compile_ms", "nan")),
        "kernel_ms": float(first.get("kernel_ms", "nan")),
        **phases,
    }


def phases_of(
    wall: float, ready_s: float, started: list[dict[str, Any]], first: dict[str, Any]
) -> dict[str, float]:
    """Start -> ready in three parts, from the agent's log: the start (process, imports, the helper
    process: to `agent_started`), the LISTs (to the first pass's trigger: its commit less
    its latency), and the first pass (to ready)."""
    if not started or not first:
        return {"start_s": math.nan, "list_s": math.nan, "pass_s": math.nan}
    up = datetime.datetime.fromisoformat(started[0]["timestamp"]).timestamp() - wall
    committed = datetime.datetime.fromisoformat(first["timestamp"]).timestamp() - wall
    trigger = committed - float(first.get("latency_ms", "nan")) / 1000
    return {"start_s": up, "list_s": trigger - up, "pass_s": ready_s - trigger}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    benchlib.common_args(parser)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-pods", type=int, default=110)
    parser.add_argument("--remote-pods", type=int, default=10_000)
    parser.add_argument("--policies", type=int, default=1_000)
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="another checkout: its agent runs in alternate rounds, for same-run ratios",
    )
    parser.add_argument("--log", help="write the last agent's log lines to FILE")
    parser.add_argument("--profile", help="run one more round under cProfile, writing FILE")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.local_pods, args.remote_pods, args.policies = 1, 4, 500, 40
    return args


def print_profile(path: str) -> None:
    stats = pstats.Stats(path, stream=sys.stdout)
    stats.sort_stats("cumulative").print_stats(30)
    stats.sort_stats("tottime").print_stats(20)


def show(label: str, r: dict[str, Any]) -> None:
    print(
        f"  {label}: ready {r['ready_s']:.2f} s (first pass: {r['first_pass_pods']} pods, compile"
        f" {r['compile_ms']:.0f} ms, kernel {r['kernel_ms']:.0f} ms); tree PSS at ready"
        f" {r['pss_ready_mib']:.0f} MiB, {SETTLE_S:g} s later {r['pss_mib']:.0f} MiB"
        f" ({', '.join(f'{k} {v:.0f}' for k, v in r['processes'].items())} MiB); start"
        f" {r['start_s']:.2f} s, LISTs {r['list_s']:.2f} s, pass {r['pass_s']:.2f} s"
    )


def phases(figures: dict[str, Any]) -> str:
    return (
        f"medians: start {figures['start_s']:.2f} s, LISTs {figures['list_s']:.2f} s,"
        f" pass {figures['pass_s']:.2f} s"
    )


def figures_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "ready_s": benchlib.summary([r["ready_s"] for r in rounds]),
        "pss_mib": statistics.median(r["pss_mib"] for r in rounds),
        "pss_ready_mib": statistics.median(r["pss_ready_mib"] for r in rounds),
        "agent_pss_mib": statistics.median(r["agent_pss_mib"] for r in rounds),
        "compile_ms": statistics.median(r["compile_ms"] for r in rounds),
        "kernel_ms": statistics.median(r["kernel_ms"] for r in rounds),
        **{k: statistics.median(r[k] for r in rounds) for k in ("start_s", "list_s", "pass_s")},
    }


def compile_bytecode(tree: pathlib.Path) -> None:
    """The bytecode of checkout `tree`'s `agent` package, written as an install writes it."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "agent")], check=True)


def main() -> int:
    args = parse_args()
    print(
        f"cold start: {args.remote_pods} realistic remote pods, {args.local_pods} local pods,"
        f" {args.policies} + 20 broad policies, {args.backend}, {args.rounds} rounds"
        + (f", alternating with the agent of {args.baseline}" if args.baseline else "")
    )
    rounds: list[dict[str, Any]] = []
    base: list[dict[str, Any]] = []
    for tree in [ROOT, *([args.baseline] if args.baseline else [])]:
        compile_bytecode(pathlib.Path(tree))
    with sandbox_cluster.SandboxCluster(ipv6=False) as cluster:
        build(cluster, args)
        for _ in range(args.rounds):
            if args.baseline:
                base.append(one_start(cluster, args, None, args.baseline))
                show("baseline", base[-1])
            rounds.append(one_start(cluster, args, None))
            show("this    ", rounds[-1])
        if args.profile:
            profiled = one_start(cluster, args, args.profile)
            print(f"  profiled round: ready {profiled['ready_s']:.2f} s")
    if args.profile:
        print_profile(args.profile)
    figures = figures_of(rounds)
    ready, pss = figures["ready_s"], figures["pss_mib"]
    print(
        f"  cold start median {ready['median']:.2f} s, max {ready['max']:.2f} s; tree PSS"
        f" median {pss:.0f} MiB (agent {figures['agent_pss_mib']:.0f} MiB); {phases(figures)}"
    )
    if base:
        before = figures["baseline"] = figures_of(base)
        figures["ratio_ready"] = ready["median"] / before["ready_s"]["median"]
        figures["ratio_pss"] = pss / before["pss_mib"]
        figures["ratio_compile"] = figures["compile_ms"] / before["compile_ms"]
        print(
            f"  baseline: cold start median {before['ready_s']['median']:.2f} s, tree PSS median"
            f" {before['pss_mib']:.0f} MiB (agent {before['agent_pss_mib']:.0f} MiB), first"
            f" pass compile {before['compile_ms']:.0f} ms, kernel {before['kernel_ms']:.0f} ms;"
            f" {phases(before)}"
        )
        print(
            f"  same-run ratios this/baseline: cold start {figures['ratio_ready']:.2f}, tree PSS"
            f" {figures['ratio_pss']:.2f}, first-pass compile {figures['ratio_compile']:.2f}"
        )
    print(f"  load average: {os.getloadavg()[0]:.1f}")
    targets = [
        benchlib.target(
            "cold_start",
            f"{ready['median']:.2f} s",
            ready["median"] <= READY_GOAL_S,
            f"cold start to /readyz <= {READY_GOAL_S:g} s",
        ),
        benchlib.target(
            "tree_memory",
            f"{pss:.0f} MiB",
            pss <= PSS_GOAL_MIB,
            f"agent tree PSS <= {PSS_GOAL_MIB:g} MiB",
        ),
    ]
    benchlib.result("cold_start", args, **figures, targets=targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
