"""Benchmark: a drop storm into one pod while labels change elsewhere.

Builds a sandbox node with a `storm/target` pod whose ingress is denied, a `storm/attacker`
pod that opens thousands of TCP connections per second to it (each a SYN the target drops),
and the `shop` pods of time_to_enforce.py whose server's allowed peers change with each flip of
the client's label. It runs the same label flips twice, without and then during the storm, and
prints for each phase:

* programming latency (the agent's `latency_ms`: watch event -> transaction committed),
  median and p99, and the ratio storm/quiet;
* CPU of the agent, its helper (the drop reader) and its dataplane worker, in % of one core;
* for the storm: connection attempts sent, packets counted by the nft drop counter
  (`podseg_dropped_packets_total`), NFLOG packets received (kernel rate-limited samples),
  flows counted (`podseg_dropped_flows_total`) and flow-log lines written.

Needs root. Usage: .venv/bin/python scripts/bench/drop_storm.py [--rate 5000] [--flips 100]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import prometheus_client.parser

from agent.dataplane.nft import render as render_nft
from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import topology

STORM = r"""
import errno, socket, sys, time
dst, port, rate, duration = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
sent, start = 0, time.monotonic()
while True:
    now = time.monotonic() - start
    if now >= duration:
        break
    due = int(now * rate)
    while sent < due:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((dst, port))
        s.close()
        sent += 1
    time.sleep(0.002)
print(sent, flush=True)
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> dict[str, int]:
    """The agent's helper (drop reader) and worker processes, by role."""
    found: dict[str, int] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and "agent.helper" in cmd:
            found["reader"] = int(entry.name)
        elif ppid == pid and "agent.dataplane.worker" in cmd:
            found["worker"] = int(entry.name)
    return found


def metric(agent: sandbox_cluster.AgentProcess, name: str, **labels: str) -> float:
    _status, text = agent.http("/metrics")
    total = 0.0
    for family in prometheus_client.parser.text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += float(s.value)
    return total


def flips(cluster: sandbox_cluster.SandboxCluster, count: int, start: int) -> list[float]:
    agent = cluster.agents["node-1"]
    latencies: list[float] = []
    for flip in range(start, start + count):
        seen = len(agent.lines)
        cluster.label_pod("shop/client", {"role": "client" if flip % 2 == 0 else "none"})

        def applied(seen: int = seen) -> dict[str, Any] | None:
            for entry in agent.lines[seen:]:
                if entry.get("event") == "ruleset_applied" and entry.get("pod") == "server":
                    return entry
            return None

        entry = sandbox_cluster.wait_until(applied, 10, "server ruleset applied")
        latencies.append(float(entry["latency_ms"]))
    return latencies


def measure(cluster: sandbox_cluster.SandboxCluster, count: int, start: int) -> Phase:
    agent = cluster.agents["node-1"]
    assert agent.pid is not None
    pids = {"agent": agent.pid, **children(agent.pid)}
    before = {role: cpu_seconds(pid) for role, pid in pids.items()}
    began = time.monotonic()
    latencies = flips(cluster, count, start)
    wall = time.monotonic() - began
    cpu = {role: (cpu_seconds(pid) - before[role]) / wall * 100 for role, pid in pids.items()}
    return Phase(latencies, cpu, wall)


STORM_SECONDS = 30.0
STORM_LABELS = {"namespace": "storm", "direction": "ingress", "policy_mode": "enforce"}


@dataclasses.dataclass
class Phase:
    """The label flips of one phase: programming latencies (ms) and CPU (% of one core)."""

    latencies: list[float]
    cpu: dict[str, float]
    wall: float


@dataclasses.dataclass
class StormCounts:
    """What the storm phase sent and what the agent counted and logged of it."""

    sent: int
    packets: float
    flows: float
    nflog: float
    lines: float


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=5000, help="connection attempts per second")
    parser.add_argument("--flips", type=int, default=100)
    return parser.parse_args()


def build(
    cluster: sandbox_cluster.SandboxCluster,
) -> tuple[topology.SandboxPod, topology.SandboxPod]:
    """The storm target (ingress denied) and attacker, and the shop pods whose server's allowed
    peers change with each flip of the client's label; returns (target, attacker)."""
    cluster.ensure_namespace("storm")
    target = cluster.add_pod("storm", "target", {"app": "target"})
    attacker = cluster.add_pod("storm", "attacker", {"app": "attacker"})
    cluster.ensure_namespace("shop")
    for i in range(6):
        cluster.add_pod("shop", f"p{i}", {"app": f"p{i}"})
    cluster.add_pod("shop", "server", {"app": "server"})
    cluster.add_pod("shop", "client", {"role": "none"})
    cluster.apply_policy(
        {
            "metadata": {"namespace": "storm", "name": "deny-target"},
            "spec": {"podSelector": {"matchLabels": {"app": "target"}}},
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
    return target, attacker


def counters(agent: sandbox_cluster.AgentProcess) -> dict[str, float]:
    """The agent's drop and flow-log counters for the storm target's namespace."""
    return {
        "packets": metric(agent, "podseg_dropped_packets_total", **STORM_LABELS),
        "flows": metric(agent, "podseg_dropped_flows_total", **STORM_LABELS),
        "nflog": metric(agent, "podseg_nflog_messages_total", result="ok"),
        "lines": metric(agent, "podseg_flow_log_lines_total"),
    }


def start_storm(
    attacker: topology.SandboxPod, target: topology.SandboxPod, rate: int
) -> subprocess.Popen[str]:
    """`rate` TCP connection attempts per second from attacker to target, for STORM_SECONDS;
    the process prints how many it sent."""
    return subprocess.Popen(
        [
            *("ip", "netns", "exec", attacker.netns, sys.executable, "-c", STORM),
            *(target.ipv4, "80", str(rate), str(STORM_SECONDS)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def storm_phase(
    cluster: sandbox_cluster.SandboxCluster,
    attacker: topology.SandboxPod,
    target: topology.SandboxPod,
    args: argparse.Namespace,
) -> tuple[Phase, StormCounts]:
    """The label flips again, inside the storm, and what the agent counted of the storm."""
    agent = cluster.agents["node-1"]
    before = counters(agent)
    storm = start_storm(attacker, target, args.rate)
    time.sleep(2.0)  # let the storm reach its rate
    phase = measure(cluster, args.flips, 10 + args.flips)
    out, _ = storm.communicate(timeout=STORM_SECONDS + 30)
    sent = int(out.strip() or 0)

    def settled() -> bool:
        value = metric(agent, "podseg_dropped_packets_total", **STORM_LABELS) - before["packets"]
        return value >= sent

    with contextlib.suppress(TimeoutError):
        sandbox_cluster.wait_until(settled, 10, "drop counters caught up")
    time.sleep(2.5)  # two flow windows: the last flows are flushed
    after = counters(agent)
    grown = {key: after[key] - before[key] for key in after}
    return phase, StormCounts(sent=sent, **grown)


def report(args: argparse.Namespace, quiet: Phase, stormy: Phase, counts: StormCounts) -> None:
    print(
        f"drop storm: {args.rate}/s TCP connection attempts into storm/target for "
        f"{STORM_SECONDS:.0f} s, {args.flips} label flips per phase "
        f"(storm phase: {stormy.wall:.1f} s inside the storm)"
    )
    for name, values in (("quiet", quiet.latencies), ("during storm", stormy.latencies)):
        print(
            f"  latency {name:13s} median {statistics.median(values):6.2f} ms"
            f"   p99 {pct(values, 0.99):6.2f} ms"
        )
    print(
        "  latency ratio storm/quiet   median "
        f"{statistics.median(stormy.latencies) / statistics.median(quiet.latencies):4.2f}x"
        f"   p99 {pct(stormy.latencies, 0.99) / pct(quiet.latencies, 0.99):4.2f}x"
    )
    for role in sorted(stormy.cpu):
        print(
            f"  cpu {role:7s} quiet {quiet.cpu.get(role, 0):5.1f} %   "
            f"storm {stormy.cpu[role]:5.1f} % of one core"
        )
    sent, packets = counts.sent, counts.packets
    print(f"  attempts sent            {sent}")
    print(
        f"  packets counted (nft)    {packets:.0f}  ({packets / max(sent, 1) * 100:.1f} % of sent)"
    )
    print(f"  packets logged (NFLOG)   {counts.nflog:.0f}  (kernel limit {render_nft.LOG_RATE})")
    print(f"  flows counted            {counts.flows:.0f}")
    print(f"  flow-log lines           {counts.lines:.0f}")


def main() -> int:
    args = parse_args()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="psg-bench-"))
    flow_log = workdir / "flows.jsonl"
    with sandbox_cluster.SandboxCluster(nodes=("node-1",), ipv6=False) as cluster:
        target, attacker = build(cluster)
        cluster.start_agent("node-1", ["--flow-window", "1", "--flow-log-file", str(flow_log)])
        flips(cluster, 10, 0)  # warm-up
        quiet = measure(cluster, args.flips, 10)
        stormy, counts = storm_phase(cluster, attacker, target, args)
        report(args, quiet, stormy, counts)
    subprocess.run(["rm", "-rf", str(workdir)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
