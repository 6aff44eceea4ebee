"""Benchmark: `podseg responder` from a finding's POST to the label committed in the API.

Starts the API emulator with N pods and a real `podseg responder` process (port 0), then:
1. POSTs one critical Falco finding per pod (sequentially): POST -> 200 "quarantined" (the
   answer comes only after the API acknowledged the patch, so this is time-to-label);
2. POSTs them all again: the idempotent "unchanged" path (one GET, no write);
3. same-run baseline: the official client's own GET + merge PATCH of each pod, no responder;
and prints median and p99 of each, plus the responder process's resident memory.
No root needed. Usage: .venv/bin/python scripts/bench/responder_latency.py [--pods 200]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

import kubernetes.client
import kubernetes.config

from testbed.emulator import server

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "responder" / "payloads" / "falco_drop_and_execute.json"
TOKEN = "bench-token-0123456789abcdef"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(name: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(
        f"{name:<58} median {statistics.median(ms):6.2f} ms   p99 {percentile(ms, 0.99):6.2f} ms"
        f"   (n={len(ms)})"
    )


def start_responder(tmp: pathlib.Path, kubeconfig: str) -> tuple[subprocess.Popen[str], int]:
    token = tmp / "token"
    token.write_text(TOKEN)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODSEG_")} | {
        "PODSEG_RESPONDER_TOKEN_FILE": str(token),
        "PODSEG_RESPONDER_LISTEN_ADDRESS": "127.0.0.1:0",
        "KUBECONFIG": kubeconfig,
        "PODSEG_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "responder", "--log-level", "info"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 30
    assert proc.stderr is not None
    for line in proc.stderr:
        record = json.loads(line)
        if record.get("event") == "responder.started":
            # Keep draining stderr so the process never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in proc.stderr or []], daemon=True).start()
            return proc, int(record["port"])
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit("the responder did not start")


def post(port: int, body: dict[str, Any]) -> tuple[float, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/findings/falco",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        outcome = json.loads(response.read())["outcome"]
    return time.perf_counter() - started, str(outcome)


def create_pods(core: kubernetes.client.CoreV1Api, count: int) -> list[str]:
    """`count` pods in namespace shop; returns their names."""
    core.create_namespace({"metadata": {"name": "shop"}})
    names = [f"web-{i:04d}" for i in range(count)]
    for name in names:
        core.create_namespaced_pod(
            "shop",
            {
                "metadata": {"name": name, "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
        )
    return names


def findings(names: list[str]) -> list[dict[str, Any]]:
    """One critical Falco finding per pod, from the sample payload."""
    sample = json.loads(SAMPLE.read_text())
    bodies = []
    for name in names:
        body = copy.deepcopy(sample)
        body["output_fields"]["k8s.pod.name"] = name
        bodies.append(body)
    return bodies


def client_baseline(core: kubernetes.client.CoreV1Api, names: list[str]) -> list[float]:
    """The official client's own GET + merge PATCH of each pod, in seconds."""
    baseline = []
    for name in names:
        started = time.perf_counter()
        pod = core.read_namespaced_pod(name, "shop")
        core.patch_namespaced_pod(
            name,
            "shop",
            {
                "metadata": {
                    "resourceVersion": pod.metadata.resource_version,
                    "labels": {"bench": "x"},
                }
            },
            _content_type="application/merge-patch+json",
        )
        baseline.append(time.perf_counter() - started)
    return baseline


def rss_kib(pid: int) -> int:
    return next(
        int(line.split()[1])
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=200)
    args = parser.parse_args()
    emu = server.EmulatorThread()
    emu.start()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = pathlib.Path(tmpdir)
        kubeconfig = str(tmp / "kubeconfig")
        emu.write_kubeconfig(kubeconfig)
        core = kubernetes.client.CoreV1Api(
            kubernetes.config.new_client_from_config(config_file=kubeconfig)
        )
        names = create_pods(core, args.pods)
        proc, port = start_responder(tmp, kubeconfig)
        try:
            bodies = findings(names)
            post(port, bodies[0] | {"output_fields": {}})  # warm-up: connection, imports
            first = [post(port, f) for f in bodies]
            assert {o for _, o in first} == {"quarantined"}, {o for _, o in first}
            again = [post(port, f) for f in bodies]
            assert {o for _, o in again} == {"unchanged"}
            baseline = client_baseline(core, names)
            rss = rss_kib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    emu.stop()
    print(f"podseg responder against the API emulator, {args.pods} pods, sequential POSTs")
    report("POST -> 200 quarantined (label committed in the API)", [s for s, _ in first])
    report("POST -> 200 unchanged (already quarantined: GET only)", [s for s, _ in again])
    report("baseline, same run: client GET + merge PATCH, no responder", baseline)
    print(f"responder resident memory after {2 * args.pods + 1} findings: {rss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
