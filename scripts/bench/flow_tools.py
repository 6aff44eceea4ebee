"""Benchmark: `podseg recommend`, `podseg whatif` and `podseg map` on a large flow graph.

No root, no kernel: a random graph (workloads spread over namespaces, each with a named port;
flows between random pairs on a few ports, all allowed, no policy in force) is built once.
Each round times, with the code the commands run:
  recommend : agent.flows.recommend for every namespace (one policy per workload)
  whatif    : agent.flows.replay of the recommended set against every flow (two verdicts per
              flow through the agent's calculation: with the policies in force, with the
              candidates)
  map       : agent.flows.layout + agent.flows.draw.svg of the whole graph
Prints medians and p99, the replay cost per flow, the same-run ratio whatif / map, then the
targets (whatif <= 2 ms and map <= 0.4 ms per flow: 10 s and 2 s for the full size) as
MET / NOT MET, then
`RESULT {json}`.
Usage:
  .venv/bin/python scripts/bench/flow_tools.py [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import random
import time

import benchlib

from agent.flows import draw, graph, layout, recommend, replay

T0 = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
PORTS = (80, 443, 5432, 8080, 9090)


def build(workloads: int, namespaces: int, flows: int, seed: int = 1) -> graph.FlowGraph:
    rng = random.Random(seed)
    ws = tuple(
        graph.Workload(
            f"ns{i % namespaces}",
            f"w{i}",
            "Deployment",
            {"app": f"w{i}"},
            (graph.NamedPort("http", 8080),),
        )
        for i in range(workloads)
    )
    ends = [graph.Endpoint(w.namespace, w.name) for w in ws]
    keys: set[graph.FlowKey] = set()
    while len(keys) < flows:
        src, dst = rng.sample(ends, 2)
        keys.add(graph.FlowKey(src, dst, "TCP", rng.choice(PORTS), "allowed"))
    return graph.FlowGraph(
        generated=T0,
        since=T0,
        until=T0,
        namespaces={f"ns{i}": {} for i in range(namespaces)},
        workloads=ws,
        policies=(),
        flows=tuple(graph.Flow(k, 1, T0, T0) for k in keys),
    )


def one_round(doc: graph.FlowGraph) -> dict[str, float]:
    t0 = time.perf_counter()
    policies = [p for ns in sorted(doc.namespaces) for p in recommend.recommend(doc, ns).policies]
    t1 = time.perf_counter()
    changes = replay.replay(doc, policies)
    t2 = time.perf_counter()
    draw.svg(layout.layout(doc))
    t3 = time.perf_counter()
    assert changes == (), "the recommendation changed an observed flow"
    return {"recommend": t1 - t0, "whatif": t2 - t1, "map": t3 - t2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    benchlib.common_args(parser)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    workloads, namespaces, flows = (40, 5, 200) if args.quick else (500, 50, 5000)
    rounds = 2 if args.quick else args.rounds
    doc = build(workloads, namespaces, flows)
    times: dict[str, list[float]] = {"recommend": [], "whatif": [], "map": []}
    for _ in range(rounds):
        for name, seconds in one_round(doc).items():
            times[name].append(seconds)
    print(f"graph: {workloads} workloads in {namespaces} namespaces, {flows} flows")
    stats = {name: benchlib.summary(values) for name, values in times.items()}
    for name, s in stats.items():
        print(f"  {name:10s} median {s['median']:.3f} s  p99 {s['p99']:.3f} s")
    per_flow_ms = stats["whatif"]["median"] / flows * 1000
    ratio = stats["whatif"]["median"] / stats["map"]["median"]
    print(f"  whatif per flow: {per_flow_ms:.3f} ms; same run: whatif / map = {ratio:.1f}x")
    map_per_flow_ms = stats["map"]["median"] / flows * 1000
    targets = [
        benchlib.target(
            "whatif-per-flow",
            f"{per_flow_ms:.2f} ms",
            per_flow_ms <= 2.0,
            "whatif <= 2 ms per flow (10 s for 5,000 flows)",
        ),
        benchlib.target(
            "map-per-flow",
            f"{map_per_flow_ms:.3f} ms",
            map_per_flow_ms <= 0.4,
            "map <= 0.4 ms per flow (2 s for 5,000 flows)",
        ),
    ]
    benchlib.result(
        "flow_tools",
        args,
        sizes={"workloads": workloads, "namespaces": namespaces, "flows": flows},
        stages=stats,
        whatif_ms_per_flow=per_flow_ms,
        same_run_ratios={"whatif_over_map": ratio},
        targets=targets,
    )


if __name__ == "__main__":
    main()
