"""`podseg status`: one line per node agent (version, ready, pods enforced / unprotected /
failed, last error), read from the agents' own endpoints (agent.localapi) through the API
server's proxy, or from `--agent-url`s. Exit code 0 when every agent answers and is ready,
1 otherwise, 2 when the agents cannot be listed."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from agent.commands import agents as agent_endpoints

COLUMNS = ("NODE", "VERSION", "READY", "ENFORCED", "UNPROTECTED", "FAILED", "LAST ERROR")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser.add_argument(
        "--agent-url",
        action="append",
        default=[],
        help="read this agent endpoint directly (repeatable) instead of through the API proxy",
    )


def collect(found: dict[str, agent_endpoints.Agent]) -> list[dict[str, Any]]:
    rows = []
    for node, agent in sorted(found.items()):
        try:
            state = agent.state()
        except agent_endpoints.AgentUnreachable as exc:
            rows.append({"node": node, "reachable": False, "error": str(exc)})
            continue
        rows.append({"reachable": True, **{k: v for k, v in state.items() if k != "local_pods"}})
    return rows


def render(rows: list[dict[str, Any]], out: TextIO) -> None:
    table = [COLUMNS]
    for row in rows:
        if not row["reachable"]:
            table.append((row["node"], "-", "unreachable", "-", "-", "-", row["error"]))
            continue
        pods = row.get("pods") or {}
        table.append(
            (
                str(row.get("node")),
                str(row.get("version")),
                "yes" if row.get("ready") else "no",
                str(pods.get("enforced", 0)),
                str(pods.get("unprotected", 0)),
                str(pods.get("failed", 0)),
                str(row.get("last_error") or "-"),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS) - 1)]
    for r in table:
        print(
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1], file=out
        )


def main(
    args: argparse.Namespace, found: dict[str, agent_endpoints.Agent], out: TextIO = sys.stdout
) -> int:
    rows = collect(found)
    if args.output == "json":
        json.dump(rows, out, indent=2)
        out.write("\n")
    else:
        render(rows, out)
    healthy = bool(rows) and all(r["reachable"] and r.get("ready") for r in rows)
    return 0 if healthy else 1
