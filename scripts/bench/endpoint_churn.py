"""Benchmark: time from an EndpointSlice change to the client's egress set being in the kernel.

Builds a sandbox node with a client pod whose egress allows only `app=db` pods on TCP 81, then
puts into the API emulator R remote pods (other nodes) and S Services with B backends each
(EndpointSlices written as the controller would), plus one Service `db` whose only allowed
backend flips between ready and not ready. Each flip adds or removes the `db` ClusterIP
element in the client's egress set, so the agent must recompile and commit. Per flip:

* agent latency: the agent's `latency_ms` (watch event received -> transaction committed),
  also observed as `podseg_policy_programming_seconds{kind="endpointslices"}`;
* end-to-end: from just before the slice PUT to the commit time the agent logs;
* apply only: the nft transaction itself (`apply_ms`), the same-run baseline.

Prints median and p99 of each. Needs root.
Usage: .venv/bin/python scripts/bench/endpoint_churn.py [--flips 200] [--services 200]
"""

from __future__ import annotations

import argparse
import datetime
import re
import statistics
import sys
import time
from typing import Any

from testbed.sandbox import cluster as sandbox_cluster


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _slice(name: str, service: str, ips: list[tuple[str, bool]]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [ip], "conditions": {"ready": ready}, "nodeName": "node-2"}
            for ip, ready in ips
        ],
        "ports": [{"name": "", "port": 81, "protocol": "TCP"}],
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flips", type=int, default=200)
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--backends", type=int, default=5)
    return parser.parse_args()


def add_remote_pods(cluster: sandbox_cluster.SandboxCluster, ips: list[str]) -> None:
    """One pod on node-2 per address; every 3rd is a db pod, so some Services are allowed."""
    for i, ip in enumerate(ips):
        cluster.emulator.insert(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"r{i}",
                    "namespace": "shop",
                    "labels": {"app": "db" if i % 3 == 0 else "other"},
                },
                "spec": {"nodeName": "node-2", "containers": [{"name": "c", "image": "x"}]},
                "status": {"phase": "Running", "podIPs": [{"ip": ip}]},
            }
        )


def add_services(
    cluster: sandbox_cluster.SandboxCluster, ips: list[str], services: int, backends: int
) -> None:
    """`services` Services of `backends` ready backends each, with their EndpointSlices."""
    for s in range(services):
        name = f"svc{s}"
        cluster.core.create_namespaced_service(
            "shop",
            {
                "metadata": {"name": name},
                "spec": {"selector": {"svc": name}, "ports": [{"port": 80, "targetPort": 81}]},
            },
        )
        chosen = ips[s * backends : (s + 1) * backends]
        cluster.discovery.create_namespaced_endpoint_slice(
            "shop", _slice(f"{name}-1", name, [(ip, True) for ip in chosen])
        )


def add_db(cluster: sandbox_cluster.SandboxCluster, db_ip: str, other_ip: str) -> None:
    """Service `db` (db_ip not ready yet, other_ip ready) and the client's egress policy, which
    allows only `app=db` pods on TCP 81."""
    cluster.core.create_namespaced_service(
        "shop",
        {
            "metadata": {"name": "db"},
            "spec": {"selector": {"app": "db"}, "ports": [{"port": 5432, "targetPort": 81}]},
        },
    )
    cluster.discovery.create_namespaced_endpoint_slice(
        "shop", _slice("db-1", "db", [(db_ip, False), (other_ip, True)])
    )
    cluster.apply_policy(
        {
            "metadata": {"namespace": "shop", "name": "client"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "client"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                        "ports": [{"port": 81}],
                    }
                ],
            },
        }
    )


def build(cluster: sandbox_cluster.SandboxCluster, args: argparse.Namespace) -> tuple[str, str]:
    """The local and remote pods, the Services and the policy; returns the flipping backend's
    address and the db Service's other (always ready) backend's."""
    remote = args.services * args.backends
    cluster.ensure_namespace("shop", {"team": "shop"})
    cluster.add_pod("shop", "client", {"app": "client"})
    for i in range(8):
        cluster.add_pod("shop", f"p{i}", {"app": f"p{i}"})
    ips = [f"198.18.{200 + i // 250}.{i % 250 + 1}" for i in range(remote + 1)]
    add_remote_pods(cluster, ips)
    add_services(cluster, ips, args.services, args.backends)
    db_ip = ips[remote] if remote % 3 == 0 else ips[0]
    add_db(cluster, db_ip, ips[1])
    return db_ip, ips[1]


def flip(
    cluster: sandbox_cluster.SandboxCluster, number: int, db_ip: str, other_ip: str
) -> tuple[dict[str, Any], float]:
    """Flip db_ip's readiness (ready on even numbers); returns the client's `ruleset_applied`
    log entry and the wall time just before the slice PUT."""
    agent = cluster.agents["node-1"]
    seen = len(agent.lines)
    body = _slice("db-1", "db", [(db_ip, number % 2 == 0), (other_ip, True)])
    current = cluster.discovery.read_namespaced_endpoint_slice("db-1", "shop")
    body["metadata"]["resourceVersion"] = current.metadata.resource_version
    started = time.time()
    cluster.discovery.replace_namespaced_endpoint_slice("db-1", "shop", body)

    def applied() -> dict[str, Any] | None:
        for entry in agent.lines[seen:]:
            if entry.get("event") == "ruleset_applied" and entry.get("pod") == "client":
                return entry
        return None

    entry: dict[str, Any] = sandbox_cluster.wait_until(applied, 10, "client ruleset applied")
    assert entry.get("trigger") == "endpointslices", entry
    return entry, started


def measure(
    cluster: sandbox_cluster.SandboxCluster, flips: int, db_ip: str, other_ip: str
) -> dict[str, list[float]]:
    """Per flip: agent latency, end-to-end time and the nft transaction alone, in ms."""
    times: dict[str, list[float]] = {"agent": [], "e2e": [], "apply": []}
    for number in range(flips):
        entry, started = flip(cluster, number, db_ip, other_ip)
        committed = datetime.datetime.fromisoformat(entry["timestamp"]).timestamp()
        times["e2e"].append((committed - started) * 1000)
        times["agent"].append(float(entry["latency_ms"]))
        times["apply"].append(float(entry["apply_ms"]))
    return times


def report(args: argparse.Namespace, times: dict[str, list[float]], metrics_text: str) -> None:
    remote = args.services * args.backends
    count = re.search(
        r'podseg_policy_programming_seconds_count\{kind="endpointslices"\} (\S+)', metrics_text
    )
    base = statistics.median(times["apply"])
    print(
        f"endpoint churn, {args.flips} readiness flips of one allowed backend, "
        f"{args.services} other Services x {args.backends} backends, {remote + 1} remote pods"
    )
    for name, values in (
        ("agent (event -> kernel)", times["agent"]),
        ("end-to-end (PUT -> kernel)", times["e2e"]),
        ("apply only (nft transaction)", times["apply"]),
    ):
        med, p99 = statistics.median(values), pct(values, 0.99)
        print(
            f"  {name:30s} median {med:7.2f} ms   p99 {p99:7.2f} ms   "
            f"median/apply {med / base:5.1f}x"
        )
    print(
        '  podseg_policy_programming_seconds_count{kind="endpointslices"} = '
        f"{count.group(1) if count else 'missing'}"
    )


def main() -> int:
    args = parse_args()
    with sandbox_cluster.SandboxCluster(nodes=("node-1",), ipv6=False) as cluster:
        db_ip, other_ip = build(cluster, args)
        agent = cluster.start_agent("node-1")
        times = measure(cluster, args.flips, db_ip, other_ip)
        _, metrics_text = agent.http("/metrics")
        report(args, times, metrics_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
