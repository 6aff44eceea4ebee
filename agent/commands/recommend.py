"""`podseg recommend -n NAMESPACE [--flows FILE]`: NetworkPolicy YAML (networking.k8s.io/v1)
allowing exactly the traffic the namespace's workloads were seen using, one policy per
workload (`agent.flows.recommend`). What the policies cannot express goes to stderr as
comments; the YAML on stdout can be applied as it is.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

import yaml

from agent.commands import flowsource
from agent.flows import graph
from agent.flows import recommend as flows_recommend


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", required=True, help="the namespace to write for")
    flowsource.add_arguments(parser)


def render(graph_doc: graph.FlowGraph, namespace: str, out: TextIO, err: TextIO) -> int:
    found = flows_recommend.recommend(graph_doc, namespace)
    since = graph_doc.since.strftime("%Y-%m-%dT%H:%M:%SZ") if graph_doc.since else "start"
    until = graph_doc.until.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.write(
        f"# podseg recommend -n {namespace}: traffic seen from {since} to {until}\n"
        f"# {len(found.policies)} policies; allowed and would-drop flows are kept, DNS added\n"
    )
    if found.policies:
        out.write("---\n")
        out.write(yaml.safe_dump_all(found.policies, sort_keys=False, default_flow_style=False))
    for note in found.notes:
        err.write(f"# note: {note}\n")
    return 0


def main(args: argparse.Namespace) -> int:
    graph_doc = flowsource.graph_from(args)
    return render(graph_doc, args.namespace, sys.stdout, sys.stderr)
