"""The `podseg` command line: `podseg agent`, `podseg demo`, `podseg cleanup`, `podseg responder`,
the operator's tools (`explain`, `status`, `policies`, `flows`, `map`, `recommend`, `whatif`),
`podseg cni install|uninstall` and `podseg --version`.

Exit codes: 0 clean stop, 1 runtime failure, 2 bad configuration (a bad flag or environment
variable, missing credentials, a port taken), always with one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

import agent
from agent import cleanup, config, logs
from agent.commands import cni_install, flowsource, mapview, whatif
from agent.commands import explain as explain_command
from agent.commands import flows as flows_command
from agent.commands import policies as policies_command
from agent.commands import recommend as recommend_command
from agent.commands import status as status_command
from agent.responder import settings as responder_settings


def _stop_before_start(signum: int, frame: types.FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="podseg", description=__doc__)
    parser.add_argument("--version", action="version", version=f"podseg {agent.version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    agent_parser = sub.add_parser("agent", help="run the node agent")
    config.add_agent_arguments(agent_parser)
    sub.add_parser("demo", help="run the sandbox demo (root; needs podseg-testbed)")
    cleanup_parser = sub.add_parser(
        "cleanup", help="remove podseg's tables from every pod namespace of this node (root)"
    )
    cleanup.add_arguments(cleanup_parser)
    responder_parser = sub.add_parser(
        "responder", help="threat-finding webhooks (Falco, Wiz, generic) -> pod quarantine label"
    )
    responder_settings.add_arguments(responder_parser)
    explain_parser = sub.add_parser(
        "explain", help="why a connection between two pods (or addresses) is allowed or blocked"
    )
    explain_command.add_arguments(explain_parser)
    status_parser = sub.add_parser("status", help="every node agent: version, ready, pod states")
    config.add_options(status_parser, (config.AGENT_OPTIONS[1],))  # --kubeconfig
    status_command.add_arguments(status_parser)
    policies_parser = sub.add_parser(
        "policies", help="every NetworkPolicy: pods selected, nodes, realized everywhere or not"
    )
    config.add_options(policies_parser, (config.AGENT_OPTIONS[1],))  # --kubeconfig
    policies_command.add_arguments(policies_parser)
    flows_parser = sub.add_parser(
        "flows", help="every node's sampled flows between workloads, as one flow graph"
    )
    config.add_options(flows_parser, (config.AGENT_OPTIONS[1],))  # --kubeconfig
    flows_command.add_arguments(flows_parser)
    _add_flow_tools(sub)
    cni_install.add_arguments(
        sub.add_parser("cni", help="chain podseg-cni into this node's CNI configuration (root)")
    )
    args = parser.parse_args(argv)
    if args.command in FLOW_TOOLS:
        return _flow_tool(args)
    if args.command == "cni":
        return cni_install.main(args)
    if args.command in ("explain", "status", "policies", "flows"):
        return _operator(args)
    if args.command == "responder":
        return _serve(
            "responder", args, responder_settings.settings_from_args, "agent.responder.app"
        )
    if args.command == "cleanup":
        try:
            settings = cleanup.settings_from_args(args)
        except config.ConfigError as exc:
            print(f"podseg cleanup: {exc}", file=sys.stderr)
            return 2
        logs.configure(settings.log_format, "info")
        return cleanup.main(settings.netns_dir, settings.scan_proc, settings.dry_run)
    if args.command == "agent":
        return _serve("agent", args, config.settings_from_args, "agent.app")
    return _demo()


FLOW_TOOLS: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
    "map": ("draw the workload graph of the flows seen (HTML, SVG or PNG)", mapview.main),
    "recommend": (
        "NetworkPolicy YAML allowing exactly a namespace's observed traffic",
        recommend_command.main,
    ),
    "whatif": ("which recorded flows candidate NetworkPolicies would change", whatif.main),
}
_FLOW_TOOL_ARGUMENTS = {
    "map": mapview.add_arguments,
    "recommend": recommend_command.add_arguments,
    "whatif": whatif.add_arguments,
}


def _add_flow_tools(sub: Any) -> None:
    for name, (text, _) in FLOW_TOOLS.items():
        _FLOW_TOOL_ARGUMENTS[name](sub.add_parser(name, help=text, description=text))


def _flow_tool(args: argparse.Namespace) -> int:
    """`podseg map`, `recommend`, `whatif`: work from a flow graph; every bad input (not a flow
    graph, not a NetworkPolicy, an unknown namespace, no Chromium) is one line and exit 2."""
    logs.configure("console", "warning")
    from agent.flows import recommend as flows_recommend
    from agent.flows import replay

    try:
        code = FLOW_TOOLS[args.command][1](args)
        sys.stdout.flush()  # here, so that a reader gone early is seen below
        return code
    except (
        flowsource.FlowSourceError,
        mapview.MapError,
        whatif.PolicyFileError,
        flows_recommend.UnknownNamespace,
        replay.ReplayError,
    ) as exc:
        print(f"podseg {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `podseg recommend ... | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _operator(args: argparse.Namespace) -> int:
    """`podseg explain` and `podseg status`: read the cluster (and the agents) with the
    operator's credentials; exit 2 with one line when they cannot be read."""
    logs.configure("console", "warning")
    from agent.commands import agents
    from agent.k8s import clients, snapshot

    try:
        given = config.resolve(args, (config.AGENT_OPTIONS[1],), os.environ)
        api = clients.api_client(given.get("kubeconfig") or None)
    except (config.ConfigError, clients.CredentialsError) as exc:
        print(f"podseg {args.command}: {exc}", file=sys.stderr)
        return 2
    try:
        urls = list(getattr(args, "agent_url", None) or [])
        if args.command == "flows":
            return flows_command.main(args, api, sys.stdout)
        if args.command == "status":
            found = agents.from_urls(urls) if urls else agents.discover(api)
            return status_command.main(args, found)
        cluster = snapshot.load(api)
        if args.command == "policies":
            return policies_command.main(args, cluster, _reports(api, args.lease_namespace))
        live = None
        if args.live:
            live = agents.from_urls(urls, api) if urls else agents.discover(api)
        return explain_command.main(args, cluster, live=live)
    except (agents.AgentUnreachable, flows_command.GatherError) as exc:
        print(f"podseg {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the API answered an error or could not be reached
        print(f"podseg {args.command}: cannot read the cluster: {exc}", file=sys.stderr)
        return 2
    finally:
        api.close()


def _reports(api: Any, namespace: str) -> dict[str, dict[str, str]]:
    """The node reports the agents publish (agent.sync.leader), read with operator rights."""
    from agent.k8s import lease, rest
    from agent.sync import leader

    selector = f"{leader.ROLE_LABEL}={leader.NODE_ROLE}"
    items = lease.list_labelled(api, namespace, selector, routes=rest.OPERATOR_ROUTES)
    parsed = [leader.parse_report(item) for item in items]
    return {node: report for node, report in (p for p in parsed if p is not None)}


def _demo() -> int:
    """`podseg demo` is test tooling: it ships with the podseg-testbed distribution (testbed/),
    not with the runtime, so it is looked up only now and may be missing (exit 2)."""
    try:
        demo = importlib.import_module("testbed.demo")
    except ModuleNotFoundError as exc:
        if exc.name not in ("testbed", "testbed.demo"):
            raise
        print(
            "podseg demo: the demo ships with the podseg-testbed package"
            " (bash scripts/demo.sh installs it)",
            file=sys.stderr,
        )
        return 2
    return int(demo.main())


def _serve(
    command: str,
    args: argparse.Namespace,
    settings_from_args: Callable[[argparse.Namespace], Any],
    app_module: str,
) -> int:
    """Run a service (`podseg agent`, `podseg responder`): bad settings or a failed start-up
    exit 2 with one line on stderr. Until the event loop installs its own handler, SIGTERM
    means a clean stop too (nothing has been written yet, and rules in the kernel stay). The
    service module is imported only now, so `--help` and bad flags answer at once."""
    signal.signal(signal.SIGTERM, _stop_before_start)
    try:
        settings = settings_from_args(args)
    except config.ConfigError as exc:
        print(f"podseg {command}: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format, settings.log_level)
    service = importlib.import_module(app_module)
    try:
        return int(asyncio.run(service.run(settings)))
    except service.StartupError as exc:
        print(f"podseg {command}: {exc}", file=sys.stderr)
        return 2
