"""Benchmark: time from a label change to the rule being in the kernel (demo-sized cluster).

Builds a sandbox node with 10 local pods, inserts 500 pods on other nodes and 50 policies into
the API emulator, starts a real agent, then flips one client pod's label N times so that the
server pod's allowed peer set changes each time. For each flip it records:

* agent latency: the agent's own `latency_ms` (watch event received -> transaction committed);
* end-to-end: from just before the API PATCH call to the commit time the agent logs
  (includes the API write, watch delivery, compile, render and the nft transaction);
* apply only: the nft transaction itself (`apply_ms`), the same-run baseline.

Prints median and p99 of each and their ratio to the apply-only baseline. Needs root.
Usage: .venv/bin/python scripts/bench/time_to_enforce.py [--flips 200] [--backend iptables]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from typing import Any

from agent.sandbox import cluster as sandbox_cluster


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flips", type=int, default=200)
    parser.add_argument("--remote-pods", type=int, default=500)
    parser.add_argument("--policies", type=int, default=50)
    parser.add_argument("--backend", default="nftables", help="nftables|iptables")
    args = parser.parse_args()
    with sandbox_cluster.SandboxCluster(nodes=("node-1",), ipv6=False) as cluster:
        cluster.ensure_namespace("shop", {"team": "shop"})
        for i in range(8):
            cluster.add_pod("shop", f"p{i}", {"app": f"p{i}"})
        cluster.add_pod("shop", "server", {"app": "server"})
        cluster.add_pod("shop", "client", {"role": "none"})
        for i in range(args.remote_pods):
            ns = f"remote-{i % 10}"
            cluster.emulator.insert(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
            )
            cluster.emulator.insert(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": f"r{i}", "namespace": ns, "labels": {"app": f"r{i % 7}"}},
                    "spec": {"nodeName": "node-2", "containers": [{"name": "c", "image": "x"}]},
                    "status": {"podIPs": [{"ip": f"198.18.{200 + i // 250}.{i % 250 + 1}"}]},
                }
            )
        for i in range(args.policies):
            cluster.apply_policy(
                {
                    "metadata": {"namespace": "shop", "name": f"filler-{i}"},
                    "spec": {
                        "podSelector": {"matchLabels": {"app": f"p{i % 8}"}},
                        "ingress": [
                            {
                                "from": [
                                    {
                                        "namespaceSelector": {},
                                        "podSelector": {"matchLabels": {"app": f"r{i % 7}"}},
                                    }
                                ],
                                "ports": [{"port": 8000 + i}],
                            }
                        ],
                    },
                }
            )
        cluster.apply_policy(
            {
                "metadata": {"namespace": "shop", "name": "server"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "server"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}],
                },
            }
        )
        agent = cluster.start_agent("node-1", ["--backend", args.backend])
        agent_ms: list[float] = []
        e2e_ms: list[float] = []
        apply_ms: list[float] = []
        for flip in range(args.flips):
            seen = len(agent.lines)
            role = "client" if flip % 2 == 0 else "none"
            started = time.time()
            cluster.label_pod("shop/client", {"role": role})

            def applied(seen: int = seen) -> dict[str, Any] | None:
                for entry in agent.lines[seen:]:
                    if entry.get("event") == "ruleset_applied" and entry.get("pod") == "server":
                        return entry
                return None

            entry = sandbox_cluster.wait_until(applied, 10, "server ruleset applied")
            committed = datetime.datetime.fromisoformat(entry["timestamp"]).timestamp()
            e2e_ms.append((committed - started) * 1000)
            agent_ms.append(float(entry["latency_ms"]))
            apply_ms.append(float(entry["apply_ms"]))
        base = statistics.median(apply_ms)
        print(
            f"time-to-enforce, {args.flips} label flips, 10 local pods, "
            f"{args.remote_pods} remote pods, {args.policies + 1} policies"
        )
        for name, values in (
            ("agent (event -> kernel)", agent_ms),
            ("end-to-end (PATCH -> kernel)", e2e_ms),
            ("apply only (nft transaction)", apply_ms),
        ):
            med, p99 = statistics.median(values), pct(values, 0.99)
            print(
                f"  {name:30s} median {med:7.2f} ms   p99 {p99:7.2f} ms   "
                f"median/apply {med / base:5.1f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
