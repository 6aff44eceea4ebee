"""Benchmark: the agent's memory and CPU footprint, to size the DaemonSet's requests and limits.

Starts the API emulator in-process, fills it with a cluster of N pods on other nodes (with IPs
and labels), namespaces and NetworkPolicies, then starts a real `podseg agent` (plus its
dataplane worker) for a node with no local pod namespaces (so no root sandbox is needed and no
address can clash with another run). It waits for /readyz, then:

* samples the resident memory (VmRSS) of the agent and the worker, settled and peak (VmHWM);
* per cached pod: the agent starts with half the pods; the other half is added once it is
  ready; the RSS growth divided by the pods added is the cost of one cached pod, and the RSS
  of agent and worker with all of them is checked against target 2d (<= 150 MiB at 10,000
  cluster pods);
* patches pod labels at a steady rate for a while and reports the CPU the two processes used,
  in millicores (CPU seconds / wall seconds), median over windows and the worst window;
* sends SIGTERM and reports the time until the process exited (sizes the grace period).

Ends with `RESULT {json}` (scripts/bench/benchlib.py).
Usage: .venv/bin/python scripts/bench/footprint.py [--pods 10000] [--policies 1000]
       [--backend nftables] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import IO, Any

import benchlib

from testbed import objects
from testbed.emulator import server

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def status_kib(pid: int, key: str) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    path = pathlib.Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()]


def pod(i: int, namespaces: int, tier: int, shape: str = "realistic") -> dict[str, Any]:
    """Pod i on another node; `realistic` as kube-apiserver returns it (benchlib.realistic_pod),
    `bare` with only what the agent reads."""
    address = f"198.{18 + i // 65000}.{i // 250 % 256}.{i % 250 + 1}"
    if shape == "realistic":
        return objects.realistic_pod(
            f"p{i}",
            f"ns-{i % namespaces}",
            {"app": f"a{i % 50}", "tier": f"t{tier}"},
            address,
            f"node-{2 + i % 50}",
            serial=i,
        )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"p{i}",
            "namespace": f"ns-{i % namespaces}",
            "labels": {"app": f"a{i % 50}", "tier": f"t{tier}"},
        },
        "spec": {"nodeName": f"node-{2 + i % 50}", "containers": [{"name": "c", "image": "x"}]},
        "status": {"podIPs": [{"ip": address}]},
    }


def settled_rss(pid: int, timeout: float = 20.0) -> float:
    """VmRSS in MiB once three samples 0.5 s apart agree within 0.2 MiB (the agent has
    finished taking in what it was sent), or the last sample after `timeout`."""
    samples: list[float] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        samples.append(status_kib(pid, "VmRSS") / 1024)
        if len(samples) >= 3 and max(samples[-3:]) - min(samples[-3:]) <= 0.2:
            break
        time.sleep(0.5)
    return samples[-1]


def watch_events(port: int, resource: str) -> float:
    """Sum of podseg_watch_events_total for `resource` (all types) of the agent at `port`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(f'podseg_watch_events_total{{resource="{resource}"')
    )


def populate(
    emu: server.EmulatorThread,
    pods: int,
    policies: int,
    namespaces: int,
    first: int = 0,
    shape: str = "realistic",
) -> None:
    for n in range(namespaces):
        emu.insert(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": f"ns-{n}", "labels": {"team": f"t{n % 10}"}},
            }
        )
    for i in range(first, pods):
        emu.insert(pod(i, namespaces, i % 3, shape))
    for i in range(policies):
        emu.insert(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": f"np{i}", "namespace": f"ns-{i % namespaces}"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": f"a{i % 50}"}},
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {"matchLabels": {"team": f"t{i % 10}"}},
                                    "podSelector": {"matchLabels": {"tier": f"t{i % 3}"}},
                                }
                            ],
                            "ports": [{"port": 80 + i % 5, "protocol": "TCP"}],
                        }
                    ],
                },
            }
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    benchlib.common_args(parser)
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--policies", type=int, default=1_000)
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument(
        "--pod-shape",
        choices=("realistic", "bare"),
        default="realistic",
        help="pods as kube-apiserver returns them (default) or only the fields the agent reads",
    )
    parser.add_argument("--churn-seconds", type=float, default=20.0)
    parser.add_argument("--churn-rate", type=float, default=50.0, help="label patches per second")
    args = parser.parse_args()
    if args.quick:
        args.pods, args.policies, args.churn_seconds = 1000, 100, 4.0
    return args


def start_agent(
    workdir: str, kubeconfig: str, backend: str
) -> tuple[subprocess.Popen[bytes], IO[str]]:
    """A real `podseg agent` for node-1 with no pod namespaces to scan; returns the process and
    its log (stderr), open for reading."""
    empty = os.path.join(workdir, "netns")
    os.mkdir(empty)
    log = open(os.path.join(workdir, "agent.log"), "w+")  # noqa: SIM115
    agent = subprocess.Popen(
        [
            *(sys.executable, "-m", "agent", "agent", "--node-name", "node-1"),
            *("--kubeconfig", kubeconfig, "--netns-dir", empty, "--no-proc-scan"),
            *("--metrics-address", "127.0.0.1:0", "--backend", backend),
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    return agent, log


def wait_ready(log: IO[str]) -> int:
    """Wait for the agent's start line, then for /readyz; returns its metrics port."""
    port = None
    deadline = time.monotonic() + 60
    while port is None and time.monotonic() < deadline:
        log.seek(0)
        for line in log:
            if '"agent_started"' in line:
                port = json.loads(line)["metrics_port"]
        time.sleep(0.1)
    assert port is not None, "agent did not start"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        time.sleep(0.1)
    print(f"ready after {time.monotonic() - t0:.2f}s")
    return int(port)


def per_cached_pod(
    emu: server.EmulatorThread, agent_pid: int, port: int, args: argparse.Namespace
) -> float:
    """Add the second half of the pods and return the agent's RSS growth per pod, in KiB."""
    half = args.pods // 2
    rss_half = settled_rss(agent_pid)
    seen = watch_events(port, "pods")
    populate(emu, args.pods, 0, args.namespaces, first=half, shape=args.pod_shape)
    t1 = time.monotonic()
    while watch_events(port, "pods") < seen + (args.pods - half):
        if time.monotonic() - t1 > 120:
            raise SystemExit("the agent did not see the added pods in 120 s")
        time.sleep(0.1)
    rss_full = settled_rss(agent_pid)
    per_pod_kib: float = (rss_full - rss_half) * 1024 / max(1, args.pods - half)
    print(
        f"agent rss {rss_half:.1f} MiB with {half} pods, {rss_full:.1f} MiB with {args.pods}:"
        f" {per_pod_kib:.2f} KiB per cached pod"
    )
    return per_pod_kib


def churn(
    emu: server.EmulatorThread, pids: dict[str, int], args: argparse.Namespace
) -> list[float]:
    """Change pod labels at `--churn-rate` for `--churn-seconds`; returns the CPU of the agent
    and the worker together in millicores, per 2 s window."""
    windows: list[float] = []
    cpu0 = sum(cpu_seconds(p) for p in pids.values())
    wall0 = time.monotonic()
    win_cpu, win_wall = cpu0, wall0
    i = 0
    end = wall0 + args.churn_seconds
    while time.monotonic() < end:
        # The emulator's insert emits MODIFIED to the agent's watch like a PATCH would.
        emu.insert(
            pod(i % args.pods, args.namespaces, (i // args.pods + i + 1) % 3, args.pod_shape)
        )
        i += 1
        time.sleep(max(0.0, wall0 + i / args.churn_rate - time.monotonic()))
        now = time.monotonic()
        if now - win_wall >= 2.0:
            cpu = sum(cpu_seconds(p) for p in pids.values())
            windows.append(1000 * (cpu - win_cpu) / (now - win_wall))
            win_cpu, win_wall = cpu, now
    total = 1000 * (sum(cpu_seconds(p) for p in pids.values()) - cpu0) / (time.monotonic() - wall0)
    print(
        f"churn {i} label changes at {args.churn_rate}/s:"
        f" cpu median {statistics.median(windows):.0f}m,"
        f" worst 2s window {max(windows):.0f}m, overall {total:.0f}m"
    )
    return windows


def memory(pids: dict[str, int], args: argparse.Namespace) -> tuple[dict[str, float], list[Any]]:
    """RSS and peak of each process, and target 2d on the agent's and worker's RSS; returns the
    figures (MiB) and the targets."""
    for name, pid in pids.items():
        print(
            f"{name}: rss {status_kib(pid, 'VmRSS') / 1024:.1f} MiB,"
            f" peak {status_kib(pid, 'VmHWM') / 1024:.1f} MiB"
        )
    worker_rss = status_kib(pids["worker"], "VmRSS") / 1024 if "worker" in pids else 0.0
    agent_rss = status_kib(pids["agent"], "VmRSS") / 1024
    agent_peak = status_kib(pids["agent"], "VmHWM") / 1024
    targets = [
        benchlib.target(
            "2d",
            f"agent {agent_rss:.1f} MiB (peak {agent_peak:.1f}) + worker {worker_rss:.1f} MiB"
            f" at {args.pods} cluster pods",
            agent_rss + worker_rss <= 150,
            "agent memory <= 150 MiB at 10,000 cluster pods",
        )
    ]
    figures = {
        "agent_rss_mib": agent_rss,
        "agent_peak_mib": agent_peak,
        "worker_rss_mib": worker_rss,
    }
    return figures, targets


def stop(agent: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and the time until the agent exited."""
    t1 = time.monotonic()
    agent.send_signal(signal.SIGTERM)
    code = agent.wait(timeout=60)
    print(f"SIGTERM -> exit {code} in {time.monotonic() - t1:.2f}s")


def print_stop_lines(log: IO[str]) -> None:
    """The agent's own log lines of its shutdown, with their timestamps."""
    log.seek(0)
    for line in log:
        if '"agent_stopp' in line:
            entry = json.loads(line)
            print(f"  {entry['timestamp']} {entry['event']}")


def main() -> int:
    args = parse_args()
    half = args.pods // 2
    emu = server.EmulatorThread()
    emu.start()
    tmp = tempfile.TemporaryDirectory(prefix="podseg-footprint-")
    kubeconfig = os.path.join(tmp.name, "kubeconfig")
    emu.write_kubeconfig(kubeconfig)
    started = time.monotonic()
    populate(emu, half, args.policies, args.namespaces, shape=args.pod_shape)
    print(
        f"footprint [{args.backend}]: populated {half} pods, {args.policies} policies"
        f" in {time.monotonic() - started:.1f}s"
    )
    agent, log = start_agent(tmp.name, kubeconfig, args.backend)
    try:
        port = wait_ready(log)
        pids = {"agent": agent.pid}
        workers = children(agent.pid)
        if workers:
            pids["worker"] = workers[0]
        per_pod_kib = per_cached_pod(emu, agent.pid, port, args)
        for name, pid in pids.items():
            print(f"{name}: rss {status_kib(pid, 'VmRSS') / 1024:.1f} MiB")
        windows = churn(emu, pids, args)
        figures, targets = memory(pids, args)
        stop(agent)
        benchlib.result(
            "footprint",
            args,
            pods=args.pods,
            policies=args.policies,
            pod_shape=args.pod_shape,
            **figures,
            per_cached_pod_kib=per_pod_kib,
            cpu_median_millicores=statistics.median(windows) if windows else None,
            targets=targets,
        )
        print_stop_lines(log)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        emu.stop()
        log.close()
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
