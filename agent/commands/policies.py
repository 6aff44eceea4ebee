"""`podseg policies`: the status of every NetworkPolicy, read with the operator's credentials.

For each policy: how many running pods it selects cluster-wide, on how many nodes, whether it
is programmed at its current version on every one of them (from the node reports the agents
publish as Leases, agent.sync.leader), and whether it has invalid parts. The same pure
computation as the leader's (agent.calc.policystatus), so the table explains its Events.
Exit code 0 when every policy that selects a pod is realized everywhere, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from agent import store
from agent.calc import policystatus

COLUMNS = ("NAMESPACE", "NAME", "PODS", "NODES", "REALIZED", "STATUS")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser.add_argument(
        "--lease-namespace",
        default="podseg-system",
        help="namespace of the agents' policy-status Leases (default podseg-system)",
    )


def statuses(
    cluster: store.Store, reports: Mapping[str, Mapping[str, str]]
) -> list[policystatus.PolicyStatus]:
    return policystatus.compute(
        cluster.policies.values(), cluster.pods.values(), cluster.namespaces, reports
    )


def verdict(status: policystatus.PolicyStatus) -> str:
    if status.selected_pods == 0:
        return "selects no pod"
    if status.missing:
        return "not realized on " + ",".join(status.missing)
    return "realized"


def render(rows: Sequence[policystatus.PolicyStatus], out: TextIO) -> None:
    table = [COLUMNS]
    for s in rows:
        state = verdict(s) + (f"; {len(s.errors)} invalid part(s)" if s.errors else "")
        table.append(
            (
                s.namespace,
                s.name,
                str(s.selected_pods),
                str(len(s.nodes)),
                f"{len(s.realized)}/{len(s.nodes)}",
                state,
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS) - 1)]
    for r in table:
        print(
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1], file=out
        )


def main(
    args: argparse.Namespace,
    cluster: store.Store,
    reports: Mapping[str, Mapping[str, str]],
    out: TextIO = sys.stdout,
) -> int:
    rows = statuses(cluster, reports)
    if args.output == "json":
        json.dump([s.as_json() for s in rows], out, indent=2)
        out.write("\n")
    else:
        render(rows, out)
    return 0 if all(s.fully_realized for s in rows) else 1
