"""The full chaos run: 1000 random events (pod, label, namespace and policy changes, pod
deletions) against a real agent killed at random moments (see testbed/chaos.py).

Prints what happened: events by kind, events made while the agent was down (replayed through
its relist), kills, tables checked whole after each kill, deny probes and how many got through
(must be 0), leftover tables swept. Exits non-zero on any violation. Needs root.
Usage: sudo .venv/bin/python scripts/chaos.py [--events 1000] [--kill-every 20] [--seed N]
"""

from __future__ import annotations

import argparse
import sys

from testbed import chaos
from testbed.sandbox import cluster as sandbox_cluster


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--kill-every", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with sandbox_cluster.SandboxCluster(nodes=("node-1",)) as cluster:
        chaos.build(cluster)
        cluster.start_agent("node-1", ["--resync-period", "1"])
        try:
            stats = chaos.Chaos(cluster, args.seed).run(args.events, args.kill_every)
        except AssertionError as exc:
            print(f"chaos: FAILED: {exc}")
            return 1
    print(stats.line())
    return 0 if stats.deny_got_through == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
