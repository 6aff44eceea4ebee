"""`podseg whatif POLICY.yaml... [--flows FILE] [-o table|json]`: which recorded flows would
change verdict if these NetworkPolicies were applied.

The candidates (multi-document YAML; a policy with the namespace and name of one in force
replaces it) join the policies in force recorded in the flow graph, and every flow is replayed
through the agent's own calculation (`agent.flows.replay`). Exit 1 when a flow that passes now
(allowed, or would-drop in visibility mode) would be dropped, 0 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import yaml

from agent.commands import flowsource
from agent.flows import graph, replay
from agent.k8s import convert


class PolicyFileError(Exception):
    """A candidate file is unreadable or holds something other than NetworkPolicies."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policies", nargs="+", metavar="POLICY.yaml", help="candidate policies")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    flowsource.add_arguments(parser)


def _check(doc: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(doc, Mapping):
        raise PolicyFileError(f"{where}: not a Kubernetes object")
    kind, version = doc.get("kind"), doc.get("apiVersion")
    if kind != "NetworkPolicy" or version != "networking.k8s.io/v1":
        raise PolicyFileError(
            f"{where}: a {version or '?'} {kind or 'object without kind'}, "
            "not a networking.k8s.io/v1 NetworkPolicy"
        )
    meta = doc.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        raise PolicyFileError(f"{where}: NetworkPolicy without metadata.name")
    if not isinstance(doc.get("spec"), Mapping):
        raise PolicyFileError(f"{where}: NetworkPolicy without spec")
    return doc


def load_policies(paths: Sequence[str]) -> list[Mapping[str, Any]]:
    """Every NetworkPolicy of the files (`kind: List` documents are opened)."""
    found: list[Mapping[str, Any]] = []
    for path in paths:
        try:
            docs = list(yaml.safe_load_all(pathlib.Path(path).read_text(encoding="utf-8")))
        except OSError as exc:
            raise PolicyFileError(f"cannot read {path}: {exc.strerror or exc}") from None
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise PolicyFileError(f"{path}: not YAML: {str(exc).splitlines()[0]}") from None
        for i, doc in enumerate(d for d in docs if d is not None):
            where = f"{path} document {i + 1}"
            if isinstance(doc, Mapping) and doc.get("kind") == "List":
                items = doc.get("items") or []
                found.extend(_check(item, f"{where} item {j + 1}") for j, item in enumerate(items))
            else:
                found.append(_check(doc, where))
    if not found:
        raise PolicyFileError(f"no NetworkPolicy in {', '.join(paths)}")
    return found


def _end(end: graph.Endpoint) -> str:
    return end.external or f"{end.namespace}/{end.workload}"


def _port(key: graph.FlowKey) -> str:
    return f"{key.protocol}/{key.port}" if key.port is not None else key.protocol


def render(changes: Sequence[replay.Change], output: str, out: TextIO) -> None:
    breaking = sum(1 for c in changes if c.breaks)
    if output == "json":
        rows = [
            {
                "src": c.flow.key.src.to_json(),
                "dst": c.flow.key.dst.to_json(),
                "protocol": c.flow.key.protocol,
                "port": c.flow.key.port,
                "recorded": c.flow.key.verdict,
                "now": c.before,
                "after": c.after,
                "breaks": c.breaks,
                "count": c.flow.count,
            }
            for c in changes
        ]
        out.write(json.dumps({"changes": rows, "breaking": breaking}, indent=2) + "\n")
        return
    if not changes:
        out.write("no recorded flow changes verdict\n")
        return
    table = [("SOURCE", "DESTINATION", "PORT", "NOW", "AFTER", "SEEN")]
    table += [
        (
            _end(c.flow.key.src),
            _end(c.flow.key.dst),
            _port(c.flow.key),
            c.before,
            c.after + (" !" if c.breaks else ""),
            str(c.flow.count),
        )
        for c in changes
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")
    out.write(
        f"{len(changes)} flows change verdict; {breaking} that pass now would be dropped (!)\n"
    )


def main(args: argparse.Namespace) -> int:
    candidates = load_policies(args.policies)
    graph_doc = flowsource.graph_from(args)
    known = set(graph_doc.namespaces) | {w.namespace for w in graph_doc.workloads}
    for policy in candidates:
        namespace, name = replay.policy_key(policy)
        if namespace not in known:
            raise PolicyFileError(
                f"NetworkPolicy {namespace}/{name}: no namespace {namespace!r} in the flow graph"
            )
    for policy in candidates:
        for error in convert.network_policy(policy).errors:  # such a part matches nothing
            namespace, name = replay.policy_key(policy)
            print(f"# note: NetworkPolicy {namespace}/{name}: {error}", file=sys.stderr)
    changes = replay.replay(graph_doc, candidates)
    render(changes, args.output, sys.stdout)
    skipped = replay.unjudged(graph_doc)
    if skipped:
        print(
            f"# note: {len(skipped)} flows not judged (ICMP, or an endpoint that is no workload"
            " of the graph)",
            file=sys.stderr,
        )
    return 1 if any(c.breaks for c in changes) else 0
