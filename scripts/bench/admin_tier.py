"""Benchmark: an admin-tier change against a NetworkPolicy change, time to enforce.

The time-to-enforce cluster (`time_to_enforce.py`: `--local-pods` pods in real namespaces,
`--remote-pods` remote pods, `--policies` NetworkPolicies, realistic broad peers) plus the
network-policy-api CRDs and two ClusterNetworkPolicies: an Admin one denying a port from the
team-t0 namespaces into the local pods' namespaces (every local pod is a subject; its peers
are the thousand pods of those namespaces) and a Baseline one. Alternately, `--rounds` times
each, it edits a NetworkPolicy's port and the Admin policy's port, and measures from the
agent receiving the watch event to the rules being committed in every affected local pod (the
agent's `reconcile_committed` line), on one backend.

Like for like, besides: a NetworkPolicy that selects every pod of namespace app-0
(`podSelector: {}`, ingress from the team-t0 namespaces on one TCP port) and an Admin policy
whose subject is that same namespace (denying the same peers one TCP port, passing the rest);
each round edits the port of each, so both edits reach the same local pods with the same
peers and the same kind of change.

Prints, for both pairs (every local pod against one; like for like), medians, p99 and the
ratios admin / NetworkPolicy (median and p99) in the same run, and the load average; as
MET / NOT MET, for each pair: the Admin-tier edit within the NetworkPolicy targets (median
and p99 each at most `SAME` times the NetworkPolicy edit's in the same run), and target 2a
(time to enforce: p50 <= 5 ms and p99 <= 100 ms) for each kind; then `RESULT {json}`.
Per kind also the share of committed pods that were patched (set elements, not replaced) and
the share that were rendered whole (not derived as an element patch from the last commit).
`--profile FILE` runs the agent under cProfile (`python -m cProfile -o FILE`, its main
thread: compile and rendering, not the dataplane worker's kernel work) and prints its top
functions after the run; its figures then carry the profiler's overhead.
Needs root. Usage:
  .venv/bin/python scripts/bench/admin_tier.py [--backend nftables] [--quick] [--profile FILE]
"""

from __future__ import annotations

import argparse
import os
import pstats
import sys
import time
from typing import Any

import benchlib
import time_to_enforce as tte

from testbed.sandbox import cluster as sandbox_cluster

# "Within the same latency targets": an Admin-tier edit's median and p99 no more than this
# many times the NetworkPolicy edit's, measured in the same run (the machine's load moves both).
SAME = 1.5


def admin_policy(
    port: int,
    subject: dict[str, str] | None = None,
    priority: int = 10,
    deny_rule: str = "no-admin-port-from-t0",
) -> dict[str, Any]:
    """An Admin policy over the namespaces labelled `subject` (every app namespace by
    default): Deny from the team-t0 namespaces on TCP `port`, Pass for the rest."""
    return {
        "tier": "Admin",
        "priority": priority,
        "subject": {"namespaces": {"matchLabels": subject or {"team": "app"}}},
        "ingress": [
            {
                "name": deny_rule,
                "action": "Deny",
                "from": [{"namespaces": {"matchLabels": {"team": "t0"}}}],
                "protocols": [{"tcp": {"destinationPort": {"number": port}}}],
            },
            {"name": "pass-the-rest", "action": "Pass", "from": [{"namespaces": {}}]},
        ],
    }


BASELINE = {
    "tier": "Baseline",
    "priority": 100,
    "subject": {"namespaces": {"matchLabels": {"team": "app"}}},
    "ingress": [
        {
            "name": "deny-t1",
            "action": "Deny",
            "from": [{"namespaces": {"matchLabels": {"team": "t1"}}}],
        }
    ],
}


# The like-for-like pair: the namespace both select, the label that tells it apart.
SAME_NAMESPACE = "app-0"
SAME_LABEL = {"podseg-bench": "same-pods"}
SUFFIX = {"every_pod": "", "same_pods": ", like for like"}  # of each pair's target names


def same_namespace() -> dict[str, Any]:
    """Namespace app-0 as `time_to_enforce.app_namespace` makes it, plus `SAME_LABEL`."""
    ns = tte.app_namespace(0)
    ns["metadata"]["labels"].update(SAME_LABEL)
    return ns


def same_admin_policy(port: int) -> dict[str, Any]:
    """An Admin policy with the NetworkPolicy `same_networkpolicy`'s pods and peers."""
    return admin_policy(port, SAME_LABEL, priority=20, deny_rule="no-port-from-t0")


def same_networkpolicy(port: int) -> dict[str, Any]:
    """A NetworkPolicy selecting every pod of `SAME_NAMESPACE`: the team-t0 pods on `port`."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": SAME_NAMESPACE, "name": "same-pods"},
        "spec": {
            "podSelector": {},
            "ingress": [
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"team": "t0"}}}],
                    "ports": [{"port": port, "protocol": "TCP"}],
                }
            ],
        },
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    benchlib.common_args(parser)
    tte.add_size_args(parser)
    parser.add_argument("--rounds", type=int, default=30, help="measurements per kind")
    parser.add_argument("--profile", help="run the agent under cProfile, writing FILE")
    args = parser.parse_args()
    tte.apply_quick_size(args)
    if args.quick:
        args.rounds = min(args.rounds, 5)
    return args


def compare(
    label: str, suffix: str, np_figures: dict[str, Any], admin: dict[str, Any]
) -> tuple[float, float, dict[str, Any]]:
    """Print one pair's rows and ratios; (median ratio, p99 ratio, its MET / NOT MET target)."""
    ratio = admin["median"] / np_figures["median"]
    ratio_p99 = admin["p99"] / np_figures["p99"]
    print(f"  {label}")
    for name, f in (("NetworkPolicy edit", np_figures), ("Admin-tier edit", admin)):
        print(
            f"    {name:20s} {f['median']:10.2f} {f['p99']:8.2f}   {f['pods_median']:9.0f}"
            f"     {f['compile_ms']:7.2f} / {f['kernel_ms']:7.2f}"
            f"     {f['patched_share']:.2f} / {f['rendered_share']:.2f}"
        )
    print(
        f"    admin / NetworkPolicy (same run): median {ratio:.1f}x, p99 {ratio_p99:.1f}x"
        f" (pods per event {admin['pods_median']:.0f} / {np_figures['pods_median']:.0f})"
    )
    target = benchlib.target(
        f"admin edit within the NetworkPolicy targets{suffix}",
        f"median {ratio:.2f}x, p99 {ratio_p99:.2f}x of the NetworkPolicy edit's",
        ratio <= SAME and ratio_p99 <= SAME,
        f"median and p99 each <= {SAME}x the NetworkPolicy edit's in the same run",
    )
    return ratio, ratio_p99, target


def rendered_count(agent: sandbox_cluster.AgentProcess) -> float:
    """The agent's pods rendered whole since it started (a ruleset change that was not
    derived as an element patch: `podseg_patch_fallbacks_total{reason="rendered"}`)."""
    _, text = agent.http("/metrics")
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("podseg_patch_fallbacks_total{") and 'reason="rendered"' in line
    )


def print_profile(path: str) -> None:
    stats = pstats.Stats(path, stream=sys.stdout)
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(25)


def main() -> int:
    args = parse_args()
    extra = ["--backend", args.backend, "--resync-period", "3600"]
    with sandbox_cluster.SandboxCluster(nodes=("node-1",), ipv6=False) as cluster:
        t0 = time.monotonic()
        tte.build(cluster, args, tte.APPS)
        emu = cluster.emulator
        emu.insert(same_namespace())
        emu.insert(same_networkpolicy(3000))
        cluster.install_admin_crds()
        cluster.apply_admin_policy("ClusterNetworkPolicy", "admin-port", admin_policy(2222))
        cluster.apply_admin_policy("ClusterNetworkPolicy", "admin-same", same_admin_policy(4000))
        cluster.apply_admin_policy("ClusterNetworkPolicy", "baseline", BASELINE)
        print(
            f"admin tier [{args.backend}]: {args.local_pods} local pods, {args.remote_pods}"
            f" remote pods, {args.policies + 1} policies, 3 ClusterNetworkPolicies"
            f" (built in {time.monotonic() - t0:.1f} s); load average {os.getloadavg()[0]:.2f}"
        )
        if args.profile:
            agent = cluster.agents["node-1"] = sandbox_cluster.AgentProcess(
                "node-1",
                cluster.kubeconfig,
                [*extra, "--flow-store", str(cluster.workdir / "flows.sqlite")],
                netns_dir=str(cluster.sandbox.netns_dir),
                proc_scan=False,
            )
            agent.command[1:3] = ["-m", "cProfile", "-o", args.profile, "-m", "agent"]
        _, agent = tte.time_to_ready(cluster, extra)
        recorder, same = tte.Recorder(agent), tte.Recorder(agent)
        rendered: dict[str, float] = {}

        def measure(rec: tte.Recorder, key: str, kind: str, change: Any) -> None:
            """`rec.measure`, counting the pods it rendered whole (not derived) under `key`."""
            before = rendered_count(agent)
            rec.measure(kind, change)
            rendered[key] = rendered.get(key, 0) + rendered_count(agent) - before

        # A policy edit changes a ruleset only when its peers exist: roles r0 .. r(remote/100-1).
        roles = max(1, min(tte.ROLES, args.remote_pods // 100))
        editable = [i for i in range(min(args.policies, args.local_pods)) if i % tte.ROLES < roles]
        for r in range(args.rounds):
            i, cycle = editable[(13 * r) % len(editable)], r // len(editable)
            measure(
                recorder,
                "every_pod policy",
                "policy",
                lambda i=i, n=cycle: emu.insert(tte.policy(i, tte.APPS, 1000 * (n % 2 + 1))),
            )
            port = 2223 + r
            measure(
                recorder,
                "every_pod clusternetworkpolicies",
                "clusternetworkpolicies",
                lambda port=port: cluster.apply_admin_policy(
                    "ClusterNetworkPolicy", "admin-port", admin_policy(port)
                ),
            )
            measure(
                same,
                "same_pods policy",
                "policy",
                lambda r=r: emu.insert(same_networkpolicy(3001 + r)),
            )
            measure(
                same,
                "same_pods clusternetworkpolicies",
                "clusternetworkpolicies",
                lambda r=r: cluster.apply_admin_policy(
                    "ClusterNetworkPolicy", "admin-same", same_admin_policy(4001 + r)
                ),
            )
        load = os.getloadavg()[0]
        print(
            "  pair / kind             median ms   p99 ms   pods/event   compile / kernel ms"
            "   patched / rendered share"
        )
        pairs = {}
        for key, label, rec in (
            ("every_pod", "Admin: every local pod; NetworkPolicy: one pod", recorder),
            ("same_pods", f"like for like: both every pod of {SAME_NAMESPACE}", same),
        ):
            np_figures = rec.figures("policy")
            admin = rec.figures("clusternetworkpolicies")
            for kind, f in (("policy", np_figures), ("clusternetworkpolicies", admin)):
                # the share of the pods committed that were rendered whole, not derived
                pods = f["pods_median"] * f["n"]
                f["rendered_share"] = rendered.get(f"{key} {kind}", 0) / max(1, pods)
            ratio, ratio_p99, target = compare(label, SUFFIX[key], np_figures, admin)
            pairs[key] = {
                "networkpolicy_ms": np_figures,
                "admin_ms": admin,
                "ratio": ratio,
                "ratio_p99": ratio_p99,
                "target": target,
            }
        print(f"  load average {load:.2f}")
        targets = [
            *(pair["target"] for pair in pairs.values()),
            *(
                benchlib.target(
                    f"2a {name}{SUFFIX[key]}",
                    f"p50 {f['median']:.2f} ms, p99 {f['p99']:.2f} ms",
                    f["median"] <= 5 and f["p99"] <= 100,
                    "p50 <= 5 ms and p99 <= 100 ms",
                )
                for key, pair in pairs.items()
                for name, f in (
                    ("networkpolicy", pair["networkpolicy_ms"]),
                    ("admin", pair["admin_ms"]),
                )
            ),
        ]
        every = pairs["every_pod"]
        benchlib.result(
            "admin_tier",
            args,
            sizes={"local_pods": args.local_pods, "remote_pods": args.remote_pods},
            networkpolicy_ms=every["networkpolicy_ms"],
            admin_ms=every["admin_ms"],
            ratio=every["ratio"],
            ratio_p99=every["ratio_p99"],
            same_pods={k: v for k, v in pairs["same_pods"].items() if k != "target"},
            load_average=load,
            targets=targets,
        )
    if args.profile:
        print_profile(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
