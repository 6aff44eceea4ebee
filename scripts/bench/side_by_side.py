"""The benchmarks' figures of two backends side by side.

Reads the `bench-results-<backend>.jsonl` files `scripts/bench.sh` writes (one per backend)
and prints, per figure, each backend's value and the ratio of the second to the first.
Usage: .venv/bin/python scripts/bench/side_by_side.py bench-results-nftables.jsonl \\
           bench-results-iptables.jsonl
"""

from __future__ import annotations

import json
import sys
from typing import Any


def flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)


def load(path: str) -> tuple[str, dict[str, float]]:
    figures: dict[str, float] = {}
    backend = path
    with open(path) as handle:
        for line in handle:
            if not line.strip():
                continue
            result = json.loads(line)
            backend = result.get("backend", backend)
            name = result.pop("benchmark")
            result.pop("targets", None)
            flatten(name, result, figures)
    return backend, figures


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    (a_name, a), (b_name, b) = load(sys.argv[1]), load(sys.argv[2])
    print(f"{'figure':60s} {a_name:>14s} {b_name:>14s}   ratio")
    for key in sorted(set(a) & set(b)):
        ratio = b[key] / a[key] if a[key] else float("nan")
        print(f"{key:60s} {a[key]:14.3f} {b[key]:14.3f}   {ratio:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
