"""Benchmark: reading LIST pages of realistic pods into the agent's model, the old way against
the typed way, in the same run.

Fixture: the 10,000 remote pods of `cold_start.py` (`testbed/objects.realistic_pod`, as
kube-apiserver returns them, about 7 KB of JSON each) in pages of 500, encoded as the API
emulator sends them. No root, no agent process.

Per page it times, with the code the agent runs:
  json  : `json.loads`, `convert.slim_pod` per pod (what `watch.list_all` did on the reflector
          thread), then `convert.pod` per pod (what the store did): the old way;
  typed : `podwire.page` (msgspec decodes only what `convert.pod` reads, straight into the
          model), then `convert.pod` for any item it left to the old way (none here).
`--baseline DIR` times the old way with DIR's `agent/k8s/convert.py` as well (the checkout
before the typed path; its `convert.pod` was slower too). The ways alternate round by round;
each round reads the whole list and keeps what it read until the round ends, as a LIST does.
Prints per-page medians and p99, the whole list's median, the ratios, the load average;
target: the typed way reads a page in at most a third of the old way's time. Then
`RESULT {json}`.
Usage:
  .venv/bin/python scripts/bench/list_decode.py [--rounds 7] [--baseline DIR] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import benchlib
import churn
import time_to_enforce as tte

from agent.k8s import convert, podwire

PAGE = 500
RATIO_GOAL = 1 / 3
Reader = Callable[[bytes], list[Any]]


def pages(remote_pods: int) -> list[bytes]:
    """The LIST of `remote_pods` realistic pods in pages of `PAGE`, as the emulator encodes it."""
    out = []
    for start in range(0, remote_pods, PAGE):
        items = [churn.remote(j, (j // 100) % tte.ROLES) for j in range(start, start + PAGE)]
        meta = {"resourceVersion": "9000", "continue": f"c{start + PAGE}"}
        body = {"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": items}
        out.append(json.dumps(body, separators=(",", ":")).encode())
    return out


def old_way(module: ModuleType) -> Reader:
    def read(data: bytes) -> list[Any]:
        body = json.loads(data)
        slim = [module.slim_pod(i) for i in body.get("items") or []]
        return [module.pod(i) for i in slim]

    return read


def typed_way(data: bytes) -> list[Any]:
    items, _, _ = podwire.page(data)
    return [i if not isinstance(i, dict) else convert.pod(i) for i in items]


def load_convert(tree: str) -> ModuleType:
    """`agent/k8s/convert.py` of checkout `tree`, as its own module (it imports this
    checkout's `agent.model`, whose classes it builds)."""
    path = os.path.join(tree, "agent", "k8s", "convert.py")
    spec = importlib.util.spec_from_file_location("baseline_convert", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_round(read: Reader, data: list[bytes]) -> tuple[list[float], float, int]:
    """Per-page seconds, the whole list's seconds and the pods read, keeping what was read."""
    kept: list[list[Any]] = []
    times = []
    started = time.perf_counter()
    for page in data:
        t0 = time.perf_counter()
        kept.append(read(page))
        times.append(time.perf_counter() - t0)
    return times, time.perf_counter() - started, sum(len(k) for k in kept)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    benchlib.common_args(parser)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--remote-pods", type=int, default=10_000)
    parser.add_argument("--baseline", metavar="DIR", help="time DIR's convert.py the old way too")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.remote_pods = 2, 1_000
    data = pages(args.remote_pods)
    ways: dict[str, Reader] = {"json": old_way(convert), "typed": typed_way}
    if args.baseline:
        ways = {"baseline json": old_way(load_convert(args.baseline)), **ways}
    expected = [p for page in data for p in ways["json"](page)]
    assert [p for page in data for p in typed_way(page)] == expected, "the ways disagree"
    print(
        f"list decode: {args.remote_pods} realistic pods, pages of {PAGE}"
        f" ({sum(map(len, data)) / len(data) / 1e6:.1f} MB each), {args.rounds} rounds"
    )
    per_page: dict[str, list[float]] = {name: [] for name in ways}
    whole: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(args.rounds):
        order = list(ways) if r % 2 == 0 else list(reversed(ways))
        for name in order:
            times, total, count = one_round(ways[name], data)
            assert count == len(expected)
            per_page[name] += times
            whole[name].append(total)
    figures: dict[str, Any] = {}
    for name in ways:
        page = benchlib.summary([t * 1e3 for t in per_page[name]])
        listed = benchlib.summary(whole[name])
        figures[name.replace(" ", "_")] = {"page_ms": page, "list_s": listed}
        print(
            f"  {name:13s}: page median {page['median']:6.1f} ms, p99 {page['p99']:6.1f} ms"
            f" ({page['median'] / PAGE * 1e3:5.1f} us/pod); whole list median"
            f" {listed['median']:.3f} s"
        )
    ratio = figures["typed"]["page_ms"]["median"] / figures["json"]["page_ms"]["median"]
    figures["ratio_typed_json"] = ratio
    print(f"  same-run ratio typed/json (page median): {ratio:.2f}")
    if args.baseline:
        base = figures["baseline_json"]["page_ms"]["median"]
        figures["ratio_typed_baseline"] = figures["typed"]["page_ms"]["median"] / base
        print(f"  same-run ratio typed/baseline json: {figures['ratio_typed_baseline']:.2f}")
    load = os.getloadavg()[0]
    print(f"  load average: {load:.1f}")
    targets = [
        benchlib.target(
            "list_decode",
            f"{ratio:.2f}",
            ratio <= RATIO_GOAL,
            f"typed page read <= {RATIO_GOAL:.2f} x the json way's",
        )
    ]
    benchlib.result("list_decode", args, **figures, load=load, targets=targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
