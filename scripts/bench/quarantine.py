"""Benchmark: quarantine time-to-isolate, from the label PATCH to the pod being cut off.

Builds a sandbox node (a quarantine target, a peer and 8 bystander pods, an allow-all policy),
starts a real agent, then N times: opens two long-lived TCP connections (peer -> target and
target -> peer, one echo every 2 ms), PATCHes `podseg.io/quarantine=true` onto the target and
records

* commit: PATCH call -> the quarantine ruleset committed in the pod's namespace (agent log
  timestamp); from then on every new connection is dropped;
* established: PATCH call -> both held connections dead, as the window between the last echo
  answered and the next one (sent 2 ms later) that never came back; the upper end is reported;
* cut: the agent's conntrack listing + deletion in the namespace (`cut_ms`).

Then it checks live that a new connection times out, removes the label, waits until traffic
flows again, and repeats. Prints median and p99 of each. Needs root.
Usage: .venv/bin/python scripts/bench/quarantine.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from typing import Any

from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import probe

ECHO = 7000
INTERVAL = 0.002


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def build(cluster: sandbox_cluster.SandboxCluster) -> None:
    """The target, its peer (both echo servers) and 8 bystanders, under an allow-all policy."""
    cluster.ensure_namespace("q", {"ns": "q"})
    for name in ("target", "peer"):
        cluster.add_pod("q", name, {"pod": name}, echo_ports=(ECHO,))
    for i in range(8):
        cluster.add_pod("q", f"bystander{i}", {"pod": f"b{i}"})
    cluster.apply_policy(
        {
            "metadata": {"namespace": "q", "name": "allow-all"},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{}],
                "egress": [{}],
            },
        }
    )


def isolate(cluster: sandbox_cluster.SandboxCluster) -> tuple[float, float, float]:
    """One round: quarantine the target while two connections are held, check it is cut off,
    lift the quarantine; returns (commit, established, cut) in ms."""
    agent = cluster.agents["node-1"]
    target, peer = cluster.pods["q/target"], cluster.pods["q/peer"]
    sandbox_cluster.wait_until(
        lambda: probe.probe(peer, target.ipv4, 80, timeout=0.5) == probe.OK,
        10,
        "traffic restored",
    )
    held = [
        probe.HeldConnection(peer, target.ipv4, ECHO, interval=INTERVAL),
        probe.HeldConnection(target, peer.ipv4, ECHO, interval=INTERVAL),
    ]
    assert all(h.connected for h in held)
    seen = len(agent.lines)
    wall, mono = time.time(), time.monotonic()
    cluster.label_pod("q/target", {"podseg.io/quarantine": "true"})

    def logged(event: str) -> dict[str, Any] | None:
        for entry in agent.lines[seen:]:
            if entry.get("event") == event and entry.get("pod") == "target":
                return entry
        return None

    reports = [h.wait_broken(10) for h in held]
    assert all(r["broken"] == "timeout" for r in reports), reports
    applied = sandbox_cluster.wait_until(
        lambda: logged("ruleset_applied"), 10, "quarantine applied"
    )
    cut = sandbox_cluster.wait_until(lambda: logged("connections_cut"), 10, "cut")
    committed = datetime.datetime.fromisoformat(applied["timestamp"]).timestamp()
    last_ok = max(float(r["last_ok"]) for r in reports)
    assert probe.probe(peer, target.ipv4, 80, timeout=0.3) == probe.TIMEOUT
    cluster.label_pod("q/target", {"podseg.io/quarantine": None})
    return (committed - wall) * 1000, (last_ok + INTERVAL - mono) * 1000, float(cut["cut_ms"])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with sandbox_cluster.SandboxCluster(nodes=("node-1",), ipv6=False) as cluster:
        build(cluster)
        cluster.start_agent("node-1")
        rounds = [isolate(cluster) for _ in range(args.rounds)]
        commit_ms, established_ms, cut_ms = ([r[i] for r in rounds] for i in range(3))
        print(f"quarantine time-to-isolate, {args.rounds} rounds, 10 local pods")
        for name, values in (
            ("PATCH -> ruleset committed", commit_ms),
            ("PATCH -> established conns dead", established_ms),
            ("conntrack list + delete", cut_ms),
        ):
            print(
                f"  {name:32s} median {statistics.median(values):7.2f} ms   "
                f"p99 {pct(values, 0.99):7.2f} ms   max {max(values):7.2f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
