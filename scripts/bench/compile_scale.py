"""Benchmark: compile + render cost of one pod's ruleset as the cluster grows. Pure, no root.

For 100, 1,000 and 10,000 peer pods (each with a named container port that resolves to one of
50 numbers), a local pod is selected by 5 policies: ingress from all pods on 80, egress to the
named port, a namespace-selected peer, an ipBlock with excepts and an allow-all-ports rule.
Prints, per size, the median and max over repeated runs of compile and of render, the number
of set elements, and the ratio to the 100-peer case (measured in the same run).
Ends with `RESULT {json}`. `--backend` is accepted for symmetry with the other benchmarks (the
compile is backend-neutral; rendering is nft). Usage:
  .venv/bin/python scripts/bench/compile_scale.py [--repeat 7] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import benchlib

from agent import model
from agent.calc import compile as calc_compile
from agent.dataplane.nft import render as render_nft
from agent.k8s import convert


def cluster(size: int) -> tuple[list[model.Pod], dict[str, model.Namespace]]:
    namespaces = {f"ns{i}": model.Namespace(f"ns{i}", {"team": f"t{i % 3}"}) for i in range(20)}
    pods = [
        model.Pod(
            namespace=f"ns{i % 20}",
            name=f"p{i}",
            labels={"app": f"a{i % 10}"},
            node_name=f"node-{i % 50}",
            ips=(f"198.18.{i // 250}.{i % 250 + 1}", f"fd00:198:18::{i:x}"),
            container_ports=(model.ContainerPort(2000 + 7 * (i % 50), "TCP", "metrics"),),
            phase="Running",
        )
        for i in range(size)
    ]
    return pods, namespaces


POLICIES = [
    {
        "podSelector": {},
        "ingress": [{"from": [{"namespaceSelector": {}}], "ports": [{"port": 80}]}],
    },
    {
        "podSelector": {"matchLabels": {"app": "a0"}},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"port": "metrics"}]}],
    },
    {
        "podSelector": {},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "t1"}}}]}],
    },
    {
        "podSelector": {},
        "ingress": [
            {"from": [{"ipBlock": {"cidr": "198.18.0.0/16", "except": ["198.18.3.0/24"]}}]}
        ],
    },
    {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}],
    },
]


def main() -> int:
    parser = argparse.ArgumentParser()
    benchlib.common_args(parser)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    sizes = (100, 1_000) if args.quick else (100, 1_000, 10_000)
    if args.quick:
        args.repeat = 3
    figures: dict[str, dict[str, float]] = {}
    policies = [
        convert.network_policy({"metadata": {"namespace": "ns0", "name": f"p{i}"}, "spec": spec})
        for i, spec in enumerate(POLICIES)
    ]
    baseline: float | None = None
    print("peers   compile median/max ms   render median/max ms   elements   vs 100 peers")
    for size in sizes:
        pods, namespaces = cluster(size)
        local = pods[0]
        compile_ms: list[float] = []
        render_ms: list[float] = []
        elements = 0
        for _ in range(args.repeat):
            started = time.perf_counter()
            rs = calc_compile.compile_pod(local, policies, namespaces, pods)
            compiled = time.perf_counter()
            rendered = render_nft.render(rs, ("eth0",))
            done = time.perf_counter()
            compile_ms.append((compiled - started) * 1000)
            render_ms.append((done - compiled) * 1000)
            elements = rendered.script.count("\n      ")
        total = statistics.median(compile_ms) + statistics.median(render_ms)
        baseline = baseline or total
        print(
            f"{size:6d}   {statistics.median(compile_ms):8.1f} / {max(compile_ms):8.1f}"
            f"      {statistics.median(render_ms):8.1f} / {max(render_ms):8.1f}"
            f"      {elements:7d}      {total / baseline:6.1f}x"
        )
        figures[str(size)] = {
            "compile_ms": statistics.median(compile_ms),
            "render_ms": statistics.median(render_ms),
            "elements": elements,
            "ratio": total / baseline,
        }
    benchlib.result("compile_scale", args, sizes=figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
