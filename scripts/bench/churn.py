"""Benchmark: pod churn at a steady rate against a real agent, with broad peers and realistic
pod objects; nothing may be lost or reordered.

Fixture: 10,000 remote pods (`benchlib.realistic_pod`: three containers, statuses,
managedFields, as kube-apiserver returns them) in 100 namespaces (10 teams, 50 roles, as
`time_to_enforce.py`), and local pods in real network namespaces (app svc-0 in app-0) selected
by the two "broad peers" policies of `flip_latency.py`: namespaceSelector (3 teams) x
podSelector (40 of the 50 roles), about 4,800 peers each. A real `podseg agent` programs them.

Churn: `--rate` changes a second for `--seconds`, paced by a clock (late writes are sent at once,
the achieved rate is printed), a repeating mix of
  flip    a peer pod's role crosses the first policy's window edge, out or back in; the same
          few pods again and again, so a reordered pair of events leaves a wrong final state;
  create  a new pod with an IP, in a team and role the policies select (joins the peer sets);
  delete  one of the pods created earlier (leaves them);
  status  a pod no policy selects gets a new status (nothing to program: the agent must still
          read it, as it reads a real cluster's status churn).
Figures: the agent's passes during the churn (`reconcile_committed`: first event of a pass to
its last commit, p50/p99, and pods per pass), the drain (last write -> its effect in the
kernel), the agent's process tree (agent + dataplane worker) PSS, sampled every 2 s (max and
at the end), its CPU time per second of churn.
Check ("no event lost or reordered"): once drained, the agent is stopped and every local pod's
tables are listed (nft JSON without handles, sets sorted; with iptables, the podseg ipsets'
elements); the tables are deleted and a fresh agent programs the same API state from scratch
(its cold start is printed too); its listings must equal the churned ones, pod for pod.
Targets: pass latency p50 <= 5 ms and p99 <= 100 ms; tree PSS <= 150 MiB; no pod differs.
Prints them as MET / NOT MET, then `RESULT {json}`. Needs root.
Usage:
  .venv/bin/python scripts/bench/churn.py [--rate 30] [--seconds 60] [--local-pods 10]
      [--remote-pods 10000] [--backend nftables|iptables] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import benchlib
import flip_latency
import time_to_enforce as tte

from testbed import objects
from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import tables

TEAMS_A = ("t0", "t1", "t2")  # the first broad policy's teams
WINDOW = flip_latency.WINDOW  # its roles r0 .. r39
EDGE = WINDOW[1] - 1
PSS_GOAL_MIB, P50_GOAL_MS, P99_GOAL_MS = 150.0, 5.0, 100.0


def remote(j: int, role: int, ip: str | None = None) -> dict[str, Any]:
    """Remote pod j (namespace r-<j % 100>, team t<j % 10>) with `role`, realistic."""
    address = ip or f"198.18.{128 + j // 250}.{j % 250 + 1}"
    return objects.realistic_pod(
        f"web-{j}",
        f"r-{j % tte.REMOTE_NAMESPACES}",
        {"role": f"r{role}"},
        address,
        "node-2",
        serial=j,
    )


def created_address(n: int) -> str:
    """The n-th created pod's address: 198.18.192.0/18, apart from the fixture's pods."""
    return f"198.18.{192 + n // 250 % 64}.{n % 250 + 1}"


class Churn:
    """The event stream: which pods exist and which role each flipper has now."""

    def __init__(self, remote_pods: int) -> None:
        self.remote_pods = remote_pods
        # team t0 pods at the window edge: flipping them changes every local pod's peers
        self.flippers = [j for j in range(remote_pods) if j % 10 == 0 and (j // 100) % 50 == EDGE]
        self.flippers = self.flippers[:8] or [0]
        self.roles = {j: (j // 100) % 50 for j in self.flippers}
        self.quiet = [j for j in range(remote_pods) if j % 10 == 9][:50]  # team t9: no policy
        self.created: list[int] = []
        self.next_new = 0
        self.counts = {"flip": 0, "create": 0, "delete": 0, "status": 0}

    def events(self) -> Iterator[tuple[str, Any]]:
        mix = ("flip", "create", "flip", "status", "flip", "delete", "flip", "status")
        n = 0
        while True:
            kind = mix[n % len(mix)]
            n += 1
            if kind == "delete" and not self.created:
                kind = "create"
            self.counts[kind] += 1
            if kind == "flip":
                j = self.flippers[(n // 2) % len(self.flippers)]
                self.roles[j] = EDGE + 1 if self.roles[j] == EDGE else EDGE
                yield kind, remote(j, self.roles[j])
            elif kind == "create":
                m = self.next_new
                self.next_new += 1
                self.created.append(m)
                yield kind, self.new_pod(m)
            elif kind == "delete":
                m = self.created.pop(0)
                yield kind, ("v1", "Pod", f"r-{(m * 10) % 100}", f"new-{m}")
            else:
                j = self.quiet[n % len(self.quiet)]
                pod = remote(j, (j // 100) % 50)
                pod["status"]["containerStatuses"][0]["restartCount"] = n
                yield kind, pod

    def new_pod(self, m: int) -> dict[str, Any]:
        # namespace r-<10m % 100>: team t0, role r<m % 40>: inside the first policy's peers
        return objects.realistic_pod(
            f"new-{m}",
            f"r-{(m * 10) % 100}",
            {"role": f"r{m % WINDOW[1]}"},
            created_address(m),
            "node-2",
            serial=100_000 + m,
        )


def tree_pids(pid: int) -> list[int]:
    """`pid` and its descendants (the agent and its dataplane worker)."""
    out = [pid]
    for child in subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True
    ).stdout.split():
        out.extend(tree_pids(int(child)))
    return out


def pss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return sum(int(line.split()[1]) for line in f if line.startswith("Pss:")) / 1024
    except OSError:
        return 0.0


def tree_pss_mib(pid: int) -> float:
    return sum(pss_mib(p) for p in tree_pids(pid))


def tree_cpu_s(pid: int) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            continue
    return total


def listing(netns: str, backend: str) -> Any:
    """What the kernel holds for podseg in `netns`, comparable across two agents."""
    if backend == "iptables":
        return tables.ipset_elements(netns)
    return tables.canonical_listing(netns)


def holds(netns: str, backend: str, address: str) -> bool:
    """Whether the pod's podseg sets hold `address` (the drain marker)."""
    if backend == "iptables":
        return any(address in e for els in tables.ipset_elements(netns).values() for e in els)
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-j", "list", "table", "inet", "podseg"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return f'"{address}"' in done.stdout


def build(cluster: sandbox_cluster.SandboxCluster, args: argparse.Namespace) -> list[str]:
    """The API objects and the local pods; returns the local pods' namespaces."""
    emu = cluster.emulator
    for obj in (
        *(tte.app_namespace(a) for a in range(10)),
        *(tte.remote_namespace(n) for n in range(tte.REMOTE_NAMESPACES)),
        flip_latency.broad_policy("wide-a", list(TEAMS_A), range(*WINDOW)),
        flip_latency.broad_policy("wide-b", ["t3", "t4", "t5"], range(10, 50)),
    ):
        emu.insert(obj)
    for j in range(args.remote_pods):
        emu.insert(remote(j, (j // 100) % 50))
    node = cluster.nodes["node-1"]
    pods = cluster.sandbox.add_pods(
        node, [("app-0", f"l{10 * k}") for k in range(args.local_pods)], ipv6=False, ports=(80,)
    )
    for k, pod in enumerate(pods):
        cluster.pods[pod.key] = pod
        emu.insert(tte.local_pod(10 * k, pod.ipv4, 1))
    return [pod.netns for pod in pods]


def run_churn(
    cluster: sandbox_cluster.SandboxCluster,
    agent: sandbox_cluster.AgentProcess,
    args: argparse.Namespace,
    netns: list[str],
) -> dict[str, Any]:
    emu = cluster.emulator
    churn = Churn(args.remote_pods)
    pid = agent.pid
    assert pid is not None
    total = int(args.rate * args.seconds)
    seen = len(agent.lines)
    pss: list[float] = []
    cpu0 = tree_cpu_s(pid)
    started = time.monotonic()
    next_sample = started
    late = 0
    for n, (kind, change) in zip(range(total), churn.events(), strict=False):
        due = started + n / args.rate
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)  # pacing the writes, not waiting for a result
        elif now - due > 1.0 / args.rate:
            late += 1
        if kind == "delete":
            emu.remove(*change)
        else:
            emu.insert(change)
        if time.monotonic() >= next_sample:
            pss.append(tree_pss_mib(pid))
            next_sample += 2.0
    wrote = time.monotonic() - started
    # the drain marker: one more created pod, inside every local pod's peers
    marker = churn.new_pod(churn.next_new)
    address = marker["status"]["podIP"]
    marked = time.monotonic()
    emu.insert(marker)
    sandbox_cluster.wait_until(
        lambda: all(holds(ns, args.backend, address) for ns in netns), 300, "drain marker"
    )
    drain_s = time.monotonic() - marked
    cpu_s = tree_cpu_s(pid) - cpu0
    pss.append(tree_pss_mib(pid))
    agent_pss = pss_mib(pid)
    passes = [e for e in agent.lines[seen:] if e.get("event") == "reconcile_committed"]
    return {
        "events": total,
        "counts": churn.counts,
        "achieved_rate": total / wrote,
        "late_writes": late,
        "passes": len(passes),
        "pass_ms": benchlib.summary([float(e["latency_ms"]) for e in passes]),
        "pods_per_pass": statistics.median([int(e["pods"]) for e in passes]) if passes else 0,
        "compile_ms_p50": statistics.median([float(e.get("compile_ms", 0)) for e in passes])
        if passes
        else float("nan"),
        "kernel_ms_p50": statistics.median([float(e.get("kernel_ms", 0)) for e in passes])
        if passes
        else float("nan"),
        "drain_s": drain_s,
        "pss_mib_max": max(pss),
        "pss_mib_end": pss[-1],
        "agent_pss_mib_end": agent_pss,
        "cpu_per_s": cpu_s / (time.monotonic() - started),
    }


def delete_tables(cluster: sandbox_cluster.SandboxCluster) -> None:
    """Remove what the churned agent left (`podseg cleanup` over the sandbox's namespaces,
    both backends), so the fresh agent programs every pod from scratch."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "cleanup",
            "--netns-dir",
            str(cluster.sandbox.netns_dir),
            "--no-proc-scan",
        ],
        capture_output=True,
        check=True,
        timeout=120,
    )


def compare_fresh(
    cluster: sandbox_cluster.SandboxCluster,
    agent: sandbox_cluster.AgentProcess,
    args: argparse.Namespace,
    netns: list[str],
    extra: list[str],
) -> tuple[int, float]:
    """Pods whose churned tables differ from a fresh agent's, and that agent's cold start."""
    agent.stop()
    churned = {ns: listing(ns, args.backend) for ns in netns}
    delete_tables(cluster)
    started = time.monotonic()
    fresh = cluster.start_agent("node-1", extra, wait=False)
    sandbox_cluster.wait_until(fresh.ready, 300, "fresh agent ready")
    cold_s = time.monotonic() - started
    differ = 0
    for ns in netns:
        if listing(ns, args.backend) != churned[ns]:
            differ += 1
            print(f"  {ns}: the churned tables differ from a fresh agent's", file=sys.stderr)
    return differ, cold_s


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    benchlib.common_args(parser)
    parser.add_argument("--rate", type=float, default=30.0, help="changes per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--local-pods", type=int, default=10)
    parser.add_argument("--remote-pods", type=int, default=10_000)
    args = parser.parse_args()
    if args.quick:
        args.rate, args.seconds, args.local_pods, args.remote_pods = 20.0, 5.0, 3, 2_000
    return args


def main() -> int:
    args = parse_args()
    extra = ["--backend", args.backend]
    print(
        f"churn: {args.rate:g} changes/s for {args.seconds:g} s, {args.remote_pods} remote pods,"
        f" {args.local_pods} local pods, {args.backend}"
    )
    with sandbox_cluster.SandboxCluster(ipv6=False) as cluster:
        netns = build(cluster, args)
        agent = cluster.start_agent("node-1", extra, wait=False)
        sandbox_cluster.wait_until(agent.ready, 300, "agent ready")
        figures = run_churn(cluster, agent, args, netns)
        differ, cold_s = compare_fresh(cluster, agent, args, netns, extra)
    p = figures["pass_ms"]
    print(
        f"  wrote {figures['events']} changes {figures['counts']} at"
        f" {figures['achieved_rate']:.1f}/s ({figures['late_writes']} late)"
    )
    print(
        f"  passes: {figures['passes']}, p50 {p['median']:.1f} ms, p99 {p['p99']:.1f} ms"
        f" (pods per pass p50 {figures['pods_per_pass']}, compile p50"
        f" {figures['compile_ms_p50']:.1f} ms, kernel p50 {figures['kernel_ms_p50']:.1f} ms)"
    )
    print(f"  drain (last write -> in every local pod's kernel): {figures['drain_s']:.2f} s")
    print(
        f"  agent tree PSS max {figures['pss_mib_max']:.0f} MiB, at the end"
        f" {figures['pss_mib_end']:.0f} MiB (agent {figures['agent_pss_mib_end']:.0f} MiB, the rest"
        f" its dataplane worker); CPU {figures['cpu_per_s']:.2f} cores"
    )
    print(f"  fresh agent cold start: {cold_s:.2f} s; pods differing from it: {differ}")
    print(f"  load average: {os.getloadavg()[0]:.1f}")
    targets = [
        benchlib.target(
            "churn_latency",
            f"p50 {p['median']:.1f} ms, p99 {p['p99']:.1f} ms",
            p["median"] <= P50_GOAL_MS and p["p99"] <= P99_GOAL_MS,
            f"pass latency p50 <= {P50_GOAL_MS:g} ms and p99 <= {P99_GOAL_MS:g} ms",
        ),
        benchlib.target(
            "churn_memory",
            f"{figures['pss_mib_max']:.0f} MiB",
            figures["pss_mib_max"] <= PSS_GOAL_MIB,
            f"agent tree PSS <= {PSS_GOAL_MIB:g} MiB",
        ),
        benchlib.target(
            "churn_nothing_lost",
            f"{differ} of {len(netns)} pods differ",
            differ == 0,
            "every local pod's tables equal a fresh agent's",
        ),
    ]
    benchlib.result("churn", args, **figures, differ=differ, cold_start_s=cold_s, targets=targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
