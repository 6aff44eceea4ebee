"""Benchmark: the calculation cost of one remote pod change with broad peers, full recompile
against the incremental calculator (`agent.calc.incremental`), in the same run.

No root, no kernel. The "broad peers" fixture of issue 15: the 110 local pods, 10,000 remote
pods in 100 namespaces and 1,000 policies of `time_to_enforce.py`, except that each policy's
peer is a namespaceSelector (3 of the 10 teams) x podSelector (`role NotIn [one role]`), so
each peer matches about 2,900 pods and each local pod's set holds thousands of elements.
Events: a remote pod's label flip (its role moves by one, so it leaves or joins the peers of
the few policies whose role window starts or ends there, if their teams hold its namespace:
for a random pod, usually none), the same for a pod picked so that about 40 policies change
(`pod_labels_hit`), and, reported apart, a new remote pod getting its IP (it joins most
policies' peers, so most local pods change). The target counts both kinds of flip.
  full        : what the reconciler does per event today: affected.affected, update_index,
                then desired.desired for every affected local pod (from the snapshot);
  incremental : Calculator.set_pod + flush (membership delta -> element patches).
Both see the same events; after each event the incremental result of every local pod the
full path recompiled must equal it (checked, counted as `mismatches`).
Prints medians and p99 per event for both, the same-run ratio, then the target (per flip:
p50 <= 5 ms and p99 <= 100 ms of calculation) for each as MET / NOT MET, then `RESULT {json}`.
The calculator's own build (a cold start's share) is printed too.
With `--memory`, also the Python heap each path holds for every local pod's result.
Usage:
  .venv/bin/python scripts/bench/incremental_calc.py [--rounds 40] [--memory] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
import tracemalloc
from typing import Any

import benchlib
import time_to_enforce as tte

from agent import store
from agent.calc import affected, incremental
from agent.calc import compile as calc_compile
from agent.calc import desired as calc_desired
from agent.calc import services as calc_services
from agent.k8s import watch

NODE = "node-1"
APPS = 11
TEAMS = 10
ROLE_WINDOW = 40  # of the 50 roles a policy's podSelector admits
P50_GOAL_MS, P99_GOAL_MS = 5.0, 100.0


def broad_policy(i: int) -> dict[str, Any]:
    """Policy i: local pods of app svc-<i % 11> in app-<i % 10> accept, on one TCP port, the
    pods of three teams' namespaces (3,000) with one of 40 of the 50 roles (about 2,400)."""
    teams = [f"t{(i + d) % TEAMS}" for d in range(3)]
    roles = [f"r{(i + d) % tte.ROLES}" for d in range(ROLE_WINDOW)]
    peer = {
        "namespaceSelector": {
            "matchExpressions": [{"key": "team", "operator": "In", "values": teams}]
        },
        "podSelector": {"matchExpressions": [{"key": "role", "operator": "In", "values": roles}]},
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": f"app-{i % 10}", "name": f"np{i}"},
        "spec": {
            "podSelector": {"matchLabels": {"app": f"svc-{i % APPS}"}},
            "ingress": [
                {"from": [peer], "ports": [{"port": tte.PORT_BASE + i % 50, "protocol": "TCP"}]}
            ],
        },
    }


def build(args: argparse.Namespace) -> store.Store:
    objs = [
        *(tte.app_namespace(a) for a in range(10)),
        *(tte.remote_namespace(n) for n in range(tte.REMOTE_NAMESPACES)),
        *(tte.remote_pod(j) for j in range(args.remote_pods)),
        *(broad_policy(i) for i in range(args.policies)),
        *(
            tte.local_pod(k, f"198.18.{k // 200}.{k % 200 + 2}", APPS, NODE)
            for k in range(args.local_pods)
        ),
    ]
    return benchlib.store_of(objs)


class Run:
    """The full path's state (as the reconciler keeps it) and the calculator, side by side."""

    def __init__(self, st: store.Store) -> None:
        self.store = st
        self.local = {k: p for k, p in st.pods.items() if p.node_name == NODE}
        self.index = calc_compile.build_index(st.namespaces, st.pods.values())
        started = time.perf_counter()
        self.calc = incremental.Calculator.of(
            NODE, pods=st.pods, namespaces=st.namespaces, policies=st.policies, nodes=st.nodes
        )
        self.calc.flush()  # every local pod's result derived: what a cold start needs
        self.calc_build_s = time.perf_counter() - started
        self.times: dict[str, dict[str, list[float]]] = {}
        self.affected: dict[str, list[int]] = {}
        self.mismatches = 0

    def full(self, change: store.Change) -> dict[str, calc_desired.Desired]:
        changes = self.store.affected_changes(change)
        targets = affected.affected(
            self.local,
            self.store.policies.values(),
            self.store.namespaces,
            changes,
            policies_for=self.store.policies_for,
        )
        self.index = calc_compile.update_index(
            self.index, self.store.namespaces, self.store.pods, change.pods
        )
        cluster = calc_desired.Cluster(
            namespaces=self.store.namespaces,
            nodes=self.store.nodes,
            policies=self.store.policy_index(),
            peers=self.index,
            services=calc_services.EMPTY,
        )
        chosen = sorted(self.local) if targets is None else sorted(targets & set(self.local))
        return {key: calc_desired.desired(self.local[key], cluster) for key in chosen}

    def event(self, kind: str, obj: dict[str, Any]) -> None:
        change = store.Change()
        self.store.apply(watch.WatchEvent("pods", "MODIFIED", obj, time.monotonic()), change)
        times = self.times.setdefault(kind, {"full": [], "incremental": []})
        started = time.perf_counter()
        full = self.full(change)
        times["full"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        for key in change.pods:
            self.calc.set_pod(key, self.store.pods.get(key))
        patched = self.calc.flush()
        times["incremental"].append((time.perf_counter() - started) * 1000)
        self.affected.setdefault(kind, []).append(len(patched))
        self.mismatches += sum(1 for k, d in full.items() if self.calc.desired(k) != d)


def flip(r: int, remote_pods: int) -> dict[str, Any]:
    """Round r's label flip: a random remote pod's role moves to the next one (it leaves the
    peers of the policies whose role window ends at its old role, joins those starting at its
    new one, when their teams hold its namespace)."""
    j = random.Random(r).randrange(remote_pods)
    return tte.remote_pod(j, j // 100 + 1)


def hit(r: int, remote_pods: int) -> dict[str, Any]:
    """Round r's flip of a pod picked so that it does leave and join peers: its namespace's
    team is one the policies at its role's window edges admit (about 40 policies change)."""
    j = random.Random(-r).randrange(remote_pods)
    role = (j // 100) % tte.ROLES
    j = (j // 10) * 10 + (role + 1 + r % 3) % 10  # same role, namespace of such a team
    return tte.remote_pod(j % remote_pods, j // 100 + 1)


def memory(st: store.Store) -> dict[str, float]:
    """MiB the Python heap grows by (tracemalloc) to hold every local pod's result: through the
    calculator, and through the full path's peer index (with its memos)."""
    out: dict[str, float] = {}
    local = {k: p for k, p in st.pods.items() if p.node_name == NODE}
    for name in ("incremental", "full"):
        gc.collect()
        tracemalloc.start()
        held: Any
        if name == "incremental":
            held = incremental.Calculator.of(
                NODE, pods=st.pods, namespaces=st.namespaces, policies=st.policies, nodes=st.nodes
            )
            held.flush()
        else:
            cluster = calc_desired.Cluster(
                namespaces=st.namespaces,
                nodes=st.nodes,
                policies=st.policy_index(),
                peers=calc_compile.build_index(st.namespaces, st.pods.values()),
                services=calc_services.EMPTY,
            )
            held = (cluster, {k: calc_desired.desired(p, cluster) for k, p in local.items()})
        gc.collect()
        out[name] = tracemalloc.get_traced_memory()[0] / 2**20
        tracemalloc.stop()
        del held
    print(
        f"  memory to hold every result: incremental {out['incremental']:.1f} MiB, "
        f"full {out['full']:.1f} MiB"
    )
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    benchlib.common_args(parser)
    tte.add_size_args(parser)
    parser.add_argument("--rounds", type=int, default=40, help="label flips")
    parser.add_argument(
        "--new-pods", type=int, default=5, help="new remote pods (each joins most peers)"
    )
    parser.add_argument(
        "--memory", action="store_true", help="also the heap each path holds (tracemalloc)"
    )
    args = parser.parse_args()
    tte.apply_quick_size(args)
    if args.quick:
        args.rounds, args.new_pods = 5, 2
    return args


def ms(values: list[float]) -> str:
    s = benchlib.summary(values)
    return f"median {s['median']:.3f} ms, p99 {s['p99']:.3f} ms (n={s['n']})"


def main() -> int:
    args = parse_args()
    started = time.perf_counter()
    st = build(args)
    built = time.perf_counter()
    run = Run(st)
    sizes = [len(run.calc.desired(k).ruleset.ingress.port_peers) for k in run.local]
    print(
        f"broad peers: {args.local_pods} local pods, {args.remote_pods} remote pods, "
        f"{args.policies} policies; ingress elements per local pod: median "
        f"{statistics.median(sizes):g}, max {max(sizes)} (store built in "
        f"{built - started:.1f} s; calculator built, every result derived, in "
        f"{run.calc_build_s:.1f} s; "
        f"with the full path's peer index {time.perf_counter() - built:.1f} s)"
    )
    for r in range(args.rounds):
        run.event("pod_labels", flip(r, args.remote_pods))
        run.event("pod_labels_hit", hit(r, args.remote_pods))
    for r in range(args.new_pods):
        run.event("pod_ip", tte.remote_pod(args.remote_pods + r, role=r))
    flips = run.times["pod_labels"]["full"] + run.times["pod_labels_hit"]["full"]
    fast = run.times["pod_labels"]["incremental"] + run.times["pod_labels_hit"]["incremental"]
    for kind, times in run.times.items():
        changed = run.affected[kind]
        print(
            f"  {kind:14s} local pods changed: median {statistics.median(changed):g}, "
            f"max {max(changed)}"
        )
        print(f"    full        {ms(times['full'])}")
        print(f"    incremental {ms(times['incremental'])}")
    full_s, fast_s = benchlib.summary(flips), benchlib.summary(fast)
    ratio = full_s["median"] / max(1e-9, fast_s["median"])
    print(
        f"  same run, label flips: full / incremental (median) = {ratio:.1f}x; "
        f"mismatches {run.mismatches}"
    )
    targets = [
        benchlib.target(
            f"flip-calc-{name}",
            f"p50 {s['median']:.2f} ms, p99 {s['p99']:.2f} ms",
            s["median"] <= P50_GOAL_MS and s["p99"] <= P99_GOAL_MS,
            f"{name}: calculation per label flip p50 <= {P50_GOAL_MS} ms, p99 <= {P99_GOAL_MS} ms",
        )
        for name, s in (("full", full_s), ("incremental", fast_s))
    ]
    held = memory(run.store) if args.memory else {}
    benchlib.result(
        "incremental_calc",
        args,
        memory_mib=held,
        events={
            kind: {k: benchlib.summary(v) for k, v in t.items()} for kind, t in run.times.items()
        },
        full=full_s,
        incremental=fast_s,
        same_run_ratios={"full_over_incremental": ratio},
        calculator_build_s=run.calc_build_s,
        mismatches=run.mismatches,
        targets=targets,
    )
    return 0 if run.mismatches == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
