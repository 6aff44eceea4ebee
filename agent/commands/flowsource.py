"""Where `podseg map`, `recommend` and `whatif` get their flow graph: a file written by
`podseg flows -o json` (`--flows FILE`), or, without one, the cluster's agents (`live`).

Why a seam: the three tools work on the graph document alone; reading it from a file or
gathering it live is the only effectful part they share, and every failure of it must end as
one line and exit 2.
"""

from __future__ import annotations

import argparse
import os
import pathlib

from agent import config
from agent.flows import graph


class FlowSourceError(Exception):
    """The flow graph cannot be had (the message is the one line the user sees)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--flows",
        metavar="FILE",
        help="a flow graph written by `podseg flows -o json` (default: gather it from the agents)",
    )
    config.add_options(parser, (config.AGENT_OPTIONS[1],))  # --kubeconfig / KUBECONFIG


def from_file(path: str) -> graph.FlowGraph:
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise FlowSourceError(f"cannot read {path}: {reason}") from None
    try:
        return graph.loads(text)
    except graph.GraphError as exc:
        raise FlowSourceError(f"{path}: {exc}") from None


def live(args: argparse.Namespace) -> graph.FlowGraph:
    """The flow graph gathered from the cluster's agents (`podseg flows`, every namespace:
    a tool narrows it itself), with the operator's kubeconfig."""
    from agent.commands import flows
    from agent.k8s import clients

    try:
        given = config.resolve(args, (config.AGENT_OPTIONS[1],), os.environ)
        api = clients.api_client(given.get("kubeconfig") or None)
    except (config.ConfigError, clients.CredentialsError) as exc:
        raise FlowSourceError(str(exc)) from None
    try:
        return flows.gather(api)
    except flows.GatherError as exc:
        raise FlowSourceError(str(exc)) from None
    except Exception as exc:  # the API answered an error or could not be reached
        raise FlowSourceError(f"cannot read the cluster: {exc}") from None
    finally:
        api.close()


def graph_from(args: argparse.Namespace) -> graph.FlowGraph:
    path = getattr(args, "flows", None)
    return from_file(path) if path else live(args)
