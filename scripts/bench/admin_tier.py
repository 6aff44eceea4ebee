"""Benchmark: an admin-tier change against a NetworkPolicy change, time to enforce.

The time-to-enforce cluster (`time_to_enforce.py`: `--local-pods` pods in real namespaces,
`--remote-pods` remote pods, `--policies` NetworkPolicies, realistic broad peers) plus the
network-policy-api CRDs and two ClusterNetworkPolicies: an Admin one denying a port from the
team-t0 namespaces into the local pods' namespaces (every local pod is a subject; its peers
are the thousand pods of those namespaces) and a Baseline one. Alternately, `--rounds` times
each, it edits a NetworkPolicy's port and the Admin policy's port, and measures from the
agent receiving the watch event to the rules being committed in every affected local pod (the
agent's `reconcile_committed` line), on one backend.

Prints medians, p99, the ratios admin / NetworkPolicy (median and p99) in the same run and
the load average; as MET / NOT MET: the Admin-tier edit within the NetworkPolicy targets
(median and p99 each at most `SAME` times the NetworkPolicy edit's in the same run), and
target 2a (time to enforce: p50 <= 5 ms and p99 <= 100 ms) for each kind; then
`RESULT {json}`. An Admin edit here commits every local pod (all are its subjects), a
NetworkPolicy edit one.
Needs root. Usage:
  .venv/bin/python scripts/bench/admin_tier.py [--backend nftables] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import benchlib
import time_to_enforce as tte

from testbed.sandbox import cluster as sandbox_cluster

# "Within the same latency targets": an Admin-tier edit's median and p99 no more than this
# many times the NetworkPolicy edit's, measured in the same run (the machine's load moves both).
SAME = 1.5


def admin_policy(port: int) -> dict[str, Any]:
    return {
        "tier": "Admin",
        "priority": 10,
        "subject": {"namespaces": {"matchLabels": {"team": "app"}}},
        "ingress": [
            {
                "name": "no-admin-port-from-t0",
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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    benchlib.common_args(parser)
    tte.add_size_args(parser)
    parser.add_argument("--rounds", type=int, default=30, help="measurements per kind")
    args = parser.parse_args()
    tte.apply_quick_size(args)
    if args.quick:
        args.rounds = min(args.rounds, 5)
    return args


def main() -> int:
    args = parse_args()
    extra = ["--backend", args.backend, "--resync-period", "3600"]
    with sandbox_cluster.SandboxCluster(nodes=("node-1",), ipv6=False) as cluster:
        t0 = time.monotonic()
        tte.build(cluster, args, tte.APPS)
        cluster.install_admin_crds()
        cluster.apply_admin_policy("ClusterNetworkPolicy", "admin-port", admin_policy(2222))
        cluster.apply_admin_policy("ClusterNetworkPolicy", "baseline", BASELINE)
        print(
            f"admin tier [{args.backend}]: {args.local_pods} local pods, {args.remote_pods}"
            f" remote pods, {args.policies} policies, 2 ClusterNetworkPolicies"
            f" (built in {time.monotonic() - t0:.1f} s)"
        )
        _, agent = tte.time_to_ready(cluster, extra)
        recorder = tte.Recorder(agent)
        emu = cluster.emulator
        # A policy edit changes a ruleset only when its peers exist: roles r0 .. r(remote/100-1).
        roles = max(1, min(tte.ROLES, args.remote_pods // 100))
        editable = [i for i in range(min(args.policies, args.local_pods)) if i % tte.ROLES < roles]
        for r in range(args.rounds):
            i, cycle = editable[(13 * r) % len(editable)], r // len(editable)
            recorder.measure(
                "policy",
                lambda i=i, n=cycle: emu.insert(tte.policy(i, tte.APPS, 1000 * (n % 2 + 1))),
            )
            port = 2223 + r
            recorder.measure(
                "clusternetworkpolicies",
                lambda port=port: cluster.apply_admin_policy(
                    "ClusterNetworkPolicy", "admin-port", admin_policy(port)
                ),
            )
        np_figures = recorder.figures("policy")
        admin = recorder.figures("clusternetworkpolicies")
        ratio = admin["median"] / np_figures["median"]
        ratio_p99 = admin["p99"] / np_figures["p99"]
        print("  kind                   median ms   p99 ms   pods/event   compile / kernel ms")
        for name, f in (("NetworkPolicy edit", np_figures), ("Admin-tier edit", admin)):
            print(
                f"  {name:20s} {f['median']:10.2f} {f['p99']:8.2f}   {f['pods_median']:9.0f}"
                f"     {f['compile_ms']:7.2f} / {f['kernel_ms']:7.2f}"
            )
        print(
            f"  admin / NetworkPolicy (same run): median {ratio:.1f}x, p99 {ratio_p99:.1f}x"
            f" (pods per event {admin['pods_median']:.0f} / {np_figures['pods_median']:.0f});"
            f" load average {os.getloadavg()[0]:.2f}"
        )
        targets = [
            benchlib.target(
                "admin edit within the NetworkPolicy targets",
                f"median {ratio:.2f}x, p99 {ratio_p99:.2f}x of the NetworkPolicy edit's",
                ratio <= SAME and ratio_p99 <= SAME,
                f"median and p99 each <= {SAME}x the NetworkPolicy edit's in the same run",
            ),
            *(
                benchlib.target(
                    f"2a {name}",
                    f"p50 {f['median']:.2f} ms, p99 {f['p99']:.2f} ms",
                    f["median"] <= 5 and f["p99"] <= 100,
                    "p50 <= 5 ms and p99 <= 100 ms",
                )
                for name, f in (("networkpolicy", np_figures), ("admin", admin))
            ),
        ]
        benchlib.result(
            "admin_tier",
            args,
            sizes={"local_pods": args.local_pods, "remote_pods": args.remote_pods},
            networkpolicy_ms=np_figures,
            admin_ms=admin,
            ratio=ratio,
            ratio_p99=ratio_p99,
            load_average=os.getloadavg()[0],
            targets=targets,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
