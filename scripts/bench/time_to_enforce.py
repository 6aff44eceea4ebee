"""Benchmark: time to enforce, cold start and restart to ready.

Builds a sandbox node with `--local-pods` pods in real network namespaces (110 by default, the
kubelet's default pod limit), puts `--remote-pods` pods on other nodes (10,000) in 100 remote
namespaces, `--nodes` other Node objects (90, dual-stack addresses: every local pod's node
guard holds them) and `--policies` NetworkPolicies (1,000) into the API emulator, and runs a real
`podseg agent --backend <backend>`. Each local pod is selected by ~policies/110 policies, each
allowing a namespace-selected, label-selected set of remote peers on one port.

It measures:

* cold start: agent process start -> /readyz 200 with every local pod programmed from scratch
  (tables deleted before each run); restart: SIGTERM, start again -> /readyz 200 (the tables
  are adopted by fingerprint);
* time to enforce, `--rounds` times each, from the agent receiving the watch event to the
  rules being committed in EVERY affected local pod (the agent's `reconcile_committed` log
  line, also exported as podseg_policy_pass_seconds{kind}):
    pod_labels        a remote pod's label moves it between two policies' peer sets
    namespace_labels  a remote namespace's label moves 100 pods in/out of peer sets
    policy            a policy's port is edited
    pod_ip            a new remote pod, matched by policies, gets its IP
  plus the nft transaction alone (`apply_ms` of the same run) as the same-run baseline, and
  where each event's time went (the agent's own split: waiting for the pass, deciding and
  compiling, the batched kernel work).

Prints medians, p99 and ratios, then target 2a (time to enforce over all kinds: p50 <= 5 ms and
p99 <= 100 ms) and target 2b (cold start and restart to ready <= 2 s) as MET / NOT MET, then
`RESULT {json}`.
Needs root. Usage:
  .venv/bin/python scripts/bench/time_to_enforce.py [--backend nftables] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import benchlib

from testbed.emulator import server as emulator_server
from testbed.sandbox import cluster as sandbox_cluster

REMOTE_NAMESPACES = 100
ROLES = 50
PORT_BASE = 8000
APPS = 11  # distinct `app` labels of the local pods


def remote_pod(j: int, role: int | None = None, ip: bool = True) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running"}
    if ip:
        address = f"198.18.{128 + j // 250}.{j % 250 + 1}"
        status.update(podIP=address, podIPs=[{"ip": address}])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"p{j}",
            "namespace": f"r-{j % REMOTE_NAMESPACES}",
            # roles are independent of namespaces: pod j has role (j // 100) % 50
            "labels": {"role": f"r{((j // 100) if role is None else role) % ROLES}"},
        },
        "spec": {"nodeName": "node-2", "containers": [{"name": "c", "image": "x"}]},
        "status": status,
    }


def remote_namespace(n: int, team: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": f"r-{n}", "labels": {"team": team or f"t{n % 10}"}},
    }


def policy(i: int, apps: int, port_offset: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": f"app-{i % 10}", "name": f"np{i}"},
        "spec": {
            "podSelector": {"matchLabels": {"app": f"svc-{i % apps}"}},
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"team": f"t{i % 10}"}},
                            "podSelector": {"matchLabels": {"role": f"r{i % ROLES}"}},
                        }
                    ],
                    "ports": [{"port": PORT_BASE + port_offset + i % 50, "protocol": "TCP"}],
                }
            ],
        },
    }


def app_namespace(a: int) -> dict[str, Any]:
    """One of the 10 namespaces of the local pods."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": f"app-{a}", "labels": {"team": "app"}},
    }


def local_pod(k: int, ip: str, apps: int, node: str = "node-1") -> dict[str, Any]:
    """Local pod k (`l<k>` in namespace app-<k % 10>, app svc-<k % apps>) holding `ip`."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"l{k}",
            "namespace": f"app-{k % 10}",
            "labels": {"app": f"svc-{k % apps}"},
        },
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def other_node(n: int) -> dict[str, Any]:
    """Another node of the cluster as its kubelet reports it: an IPv4 and an IPv6 InternalIP
    (every local pod's node guard holds every node's addresses)."""
    addresses = [f"198.19.{n // 250}.{n % 250 + 1}", f"fd00:198:18:ff::{n + 1:x}"]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": f"other-{n}"},
        "status": {
            "addresses": [
                *({"type": "InternalIP", "address": a} for a in addresses),
                {"type": "Hostname", "address": f"other-{n}"},
            ]
        },
    }


def cluster_objects(args: argparse.Namespace, apps: int) -> list[dict[str, Any]]:
    """The API objects of the benchmark's cluster, local pods apart."""
    return [
        *(other_node(n) for n in range(args.nodes)),
        *(app_namespace(a) for a in range(10)),
        *(remote_namespace(n) for n in range(REMOTE_NAMESPACES)),
        *(remote_pod(j) for j in range(args.remote_pods)),
        *(policy(i, apps) for i in range(args.policies)),
    ]


def add_size_args(parser: argparse.ArgumentParser) -> None:
    """The cluster size of the time-to-enforce measurement, and `--quick`'s smaller one (see
    `apply_quick_size`)."""
    parser.add_argument("--local-pods", type=int, default=110)
    parser.add_argument("--remote-pods", type=int, default=10_000)
    parser.add_argument("--policies", type=int, default=1_000)
    parser.add_argument(
        "--nodes",
        type=int,
        default=90,
        help="other nodes, as Node objects (90: 10,000 pods at the kubelet's 110 a node)",
    )


def apply_quick_size(args: argparse.Namespace) -> None:
    if args.quick:
        args.local_pods, args.remote_pods, args.policies, args.nodes = 12, 400, 60, 4


def build(cluster: sandbox_cluster.SandboxCluster, args: argparse.Namespace, apps: int) -> None:
    emu = cluster.emulator
    for obj in cluster_objects(args, apps):
        emu.insert(obj)
    node = cluster.nodes["node-1"]
    wanted = [(f"app-{k % 10}", f"l{k}") for k in range(args.local_pods)]
    pods = cluster.sandbox.add_pods(node, wanted, ipv6=False, ports=(80,))
    for k, pod in enumerate(pods):
        cluster.pods[pod.key] = pod
        emu.insert(local_pod(k, pod.ipv4, apps))


def delete_tables(cluster: sandbox_cluster.SandboxCluster) -> None:
    for pod in cluster.pods.values():
        subprocess.run(
            ["ip", "netns", "exec", pod.netns, "nft", "-f", "-"],
            input="table inet podseg\ndelete table inet podseg\n"
            "table netdev podseg\ndelete table netdev podseg\n",
            text=True,
            check=True,
        )


def time_to_ready(
    cluster: sandbox_cluster.SandboxCluster, extra: list[str]
) -> tuple[float, sandbox_cluster.AgentProcess]:
    started = time.monotonic()
    agent = cluster.start_agent("node-1", extra, wait=False)
    sandbox_cluster.wait_until(agent.ready, 120, "agent ready")
    return time.monotonic() - started, agent


def wait_commit(
    agent: sandbox_cluster.AgentProcess, seen: int, kind: str, timeout: float = 30.0
) -> dict[str, Any]:
    def committed() -> dict[str, Any] | None:
        for entry in agent.lines[seen:]:
            if entry.get("event") == "reconcile_committed" and entry.get("trigger") == kind:
                return entry
        return None

    try:
        entry: dict[str, Any] = sandbox_cluster.wait_until(committed, timeout, f"{kind} committed")
    except TimeoutError:
        print(f"  agent running: {agent.running}; its last log lines:", file=sys.stderr)
        for line in agent.lines[seen:][-15:] or agent.raw[-15:]:
            print("  agent:", line, file=sys.stderr)
        raise
    return entry


class Recorder:
    """Per event kind, what the agent's `reconcile_committed` line says about each event:
    latency, pods touched and patched, and where the time went (queued, compile, kernel)."""

    def __init__(self, agent: sandbox_cluster.AgentProcess) -> None:
        self.agent = agent
        self.kinds: dict[str, list[float]] = {}
        self.pods_touched: dict[str, list[int]] = {}
        self.patched: dict[str, list[int]] = {}
        self.parts: dict[str, dict[str, list[float]]] = {}

    def measure(self, kind: str, change: Callable[..., object]) -> None:
        """Make `change` and record the commit it causes."""
        print(f"  measuring {kind} ({len(self.kinds.get(kind, []))} done)", file=sys.stderr)
        seen = len(self.agent.lines)
        change()
        entry = wait_commit(self.agent, seen, kind)
        self.kinds.setdefault(kind, []).append(float(entry["latency_ms"]))
        self.pods_touched.setdefault(kind, []).append(int(entry["pods"]))
        self.patched.setdefault(kind, []).append(int(entry["patched"]))
        for part in ("queued_ms", "compile_ms", "kernel_ms"):
            self.parts.setdefault(kind, {}).setdefault(part, []).append(float(entry.get(part, 0)))

    def figures(self, kind: str) -> dict[str, Any]:
        """The summary of one kind, with medians of pods, patched share and time parts."""
        return {
            **benchlib.summary(self.kinds[kind]),
            "pods_median": statistics.median(self.pods_touched[kind]),
            "patched_share": sum(self.patched[kind]) / max(1, sum(self.pods_touched[kind])),
            **{part: statistics.median(v) for part, v in self.parts[kind].items()},
        }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    benchlib.common_args(parser)
    add_size_args(parser)
    parser.add_argument("--rounds", type=int, default=40, help="measurements per event kind")
    parser.add_argument("--restarts", type=int, default=3)
    args = parser.parse_args()
    apply_quick_size(args)
    if args.quick:
        args.rounds, args.restarts = 4, 1
    return args


def add_pending_pods(emu: emulator_server.EmulatorThread, rounds: int, first: int) -> None:
    """The pods that get their IP during the run (pod_ip events): in the LIST, without an IP."""
    for r in range(rounds):
        new = first + r
        emu.insert(remote_pod(new, role=new, ip=False))


def cold_starts(
    cluster: sandbox_cluster.SandboxCluster, extra: list[str], attempts: int
) -> list[float]:
    """Seconds from agent start to ready with no tables in the pods, `attempts` times."""
    cold: list[float] = []
    for attempt in range(attempts):
        if attempt:
            cluster.agents["node-1"].stop()
            delete_tables(cluster)
        seconds, _ = time_to_ready(cluster, extra)
        cold.append(seconds)
    return cold


def restarts(cluster: sandbox_cluster.SandboxCluster, extra: list[str], count: int) -> list[float]:
    """Seconds from agent start to ready over the tables of the agent before, `count` times."""
    restart: list[float] = []
    for _ in range(count):
        cluster.agents["node-1"].stop()
        seconds, _ = time_to_ready(cluster, extra)
        restart.append(seconds)
    return restart


def run_events(
    emu: emulator_server.EmulatorThread, args: argparse.Namespace, recorder: Recorder
) -> None:
    """`--rounds` events of each kind, each measured by `recorder`."""
    # Each event below is chosen to change at least one local pod's ruleset (else the
    # agent rightly commits nothing): roles present are r0 .. r(remote_pods/100 - 1).
    roles_present = max(1, min(ROLES, args.remote_pods // 100))
    editable = [i for i in range(min(args.policies, args.local_pods)) if i % ROLES < roles_present]
    for r in range(args.rounds):
        # pod j = 100r + r%10 has role r%50 in a namespace of team t(r%10): the policies
        # i = r (mod 50) allow it; its new role r+1 matches none of that team.
        j = (100 * r + r % 10) % args.remote_pods
        recorder.measure("pod_labels", lambda j=j: emu.insert(remote_pod(j, j // 100 + 1)))
        # namespaces r-50.. (apart from those of the pod_labels and pod_ip events), off
        # then back on
        n = 50 + (r // 2) % min(roles_present, REMOTE_NAMESPACES - 50)
        off = f"t{n % 10}" if r % 2 else "off"
        recorder.measure(
            "namespace_labels", lambda n=n, off=off: emu.insert(remote_namespace(n, off))
        )
        i = editable[(13 * r) % len(editable)]
        recorder.measure(
            "policy",
            lambda i=i, r=r: emu.insert(policy(i, APPS, 1000 * ((r // args.policies) % 2 + 1))),
        )
        new = args.remote_pods + r
        recorder.measure("pod_ip", lambda new=new: emu.insert(remote_pod(new, role=new)))


def report_starts(
    cold: list[float], restart: list[float], adopted: int, applies: list[dict[str, Any]]
) -> tuple[list[float], list[float]]:
    """Print the start times and one pod's transaction; returns the apply times (ms) of the
    patches and of the replaces."""
    apply_patch = [float(e["apply_ms"]) for e in applies if e.get("mode") == "patch"]
    apply_replace = [float(e["apply_ms"]) for e in applies if e.get("mode") == "replace"]
    print(f"  cold start -> ready:   {', '.join(f'{s:.2f} s' for s in cold)}")
    print(
        f"  restart -> ready:      {', '.join(f'{s:.2f} s' for s in restart)}"
        f" (tables adopted in the last restart: {adopted})"
    )
    print(
        f"  one pod's transaction: patch median {statistics.median(apply_patch or [0]):.2f} ms"
        f" ({len(apply_patch)}), replace median"
        f" {statistics.median(apply_replace or [0]):.2f} ms ({len(apply_replace)})"
    )
    return apply_patch, apply_replace


def report_kinds(recorder: Recorder, base: float) -> dict[str, Any]:
    """Print one line per event kind (ratios against `base`, one pod's transaction); returns
    the figures per kind."""
    print(
        "  event kind          median ms   p99 ms   pods/event  patched  median/patch"
        "   queued / compile / kernel ms (medians)"
    )
    figures: dict[str, Any] = {}
    for kind in recorder.kinds:
        f = figures[kind] = recorder.figures(kind)
        print(
            f"  {kind:18s} {f['median']:9.2f} {f['p99']:8.2f}"
            f"   {f['pods_median']:9.0f}"
            f"   {f['patched_share']:6.0%}   {f['median'] / base:8.1f}x"
            f"     {f['queued_ms']:6.2f} / {f['compile_ms']:6.2f}"
            f" / {f['kernel_ms']:6.2f}"
        )
    return figures


def start_targets(
    overall: dict[str, float], cold: list[float], restart: list[float]
) -> list[dict[str, Any]]:
    """Targets 2a (time to enforce over all kinds) and 2b (cold start and restart to ready)."""
    return [
        benchlib.target(
            "2a",
            f"p50 {overall['median']:.2f} ms, p99 {overall['p99']:.2f} ms (all kinds)",
            overall["median"] <= 5 and overall["p99"] <= 100,
            "p50 <= 5 ms and p99 <= 100 ms",
        ),
        benchlib.target(
            "2b",
            f"cold {max(cold):.2f} s, restart {max(restart):.2f} s (worst)",
            max(cold + restart) <= 2.0,
            "cold start and restart to ready <= 2 s",
        ),
    ]


def main() -> int:
    args = parse_args()
    extra = ["--backend", args.backend, "--resync-period", "3600"]
    with sandbox_cluster.SandboxCluster(nodes=("node-1",), ipv6=False) as cluster:
        t0 = time.monotonic()
        build(cluster, args, APPS)
        print(
            f"time-to-enforce [{args.backend}]: {args.local_pods} local pods (real namespaces),"
            f" {args.remote_pods} remote pods, {args.policies} policies"
            f" (built in {time.monotonic() - t0:.1f} s)"
        )
        add_pending_pods(cluster.emulator, args.rounds, args.remote_pods)
        cold = cold_starts(cluster, extra, 1 if args.quick else 2)
        agent = cluster.agents["node-1"]
        recorder = Recorder(agent)
        apply_seen = len(agent.lines)
        run_events(cluster.emulator, args, recorder)
        applies = [e for e in agent.lines[apply_seen:] if e.get("event") == "ruleset_applied"]
        # restarts last: an adopted table's first change is a full replace (by design)
        restart = restarts(cluster, extra, args.restarts)
        adopted = len(cluster.agents["node-1"].events("ruleset_adopted"))
        apply_patch, apply_replace = report_starts(cold, restart, adopted, applies)
        base = statistics.median(apply_patch or apply_replace or [float("nan")])
        figures = report_kinds(recorder, base)
        overall = benchlib.summary([v for values in recorder.kinds.values() for v in values])
        benchlib.result(
            "time_to_enforce",
            args,
            sizes={
                "local_pods": args.local_pods,
                "remote_pods": args.remote_pods,
                "policies": args.policies,
            },
            cold_start_s=cold,
            restart_s=restart,
            apply_patch_ms=benchlib.summary(apply_patch),
            apply_replace_ms=benchlib.summary(apply_replace),
            kinds=figures,
            overall_ms=overall,
            targets=start_targets(overall, cold, restart),
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
