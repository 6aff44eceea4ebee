"""Validated, frozen agent settings built from flags and their environment variables.

One place decides defaults and rejects bad values with a clear message before anything starts,
so the rest of the agent never re-checks its configuration.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence

from agent.calc import containment, ruleset

BACKENDS = ("nftables", "iptables")
LOG_FORMATS = ("json", "console")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the flag."""


@dataclasses.dataclass(frozen=True)
class Settings:
    node_name: str
    kubeconfig: str | None
    netns_dir: str = "/var/run/netns"
    scan_proc: bool = True
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9808
    backend: str = "nftables"
    log_format: str = "json"
    log_level: str = "info"
    worker_timeout: float = 10.0
    watch_timeout: int = 300
    resync_period: float = 60.0
    flow_log_file: str | None = None  # None: the flow log goes to stdout
    flow_window: float = 5.0
    max_drop_series: int = 1000
    flow_capture: bool = True
    # Containment (agent.calc.containment): guarded node services, None = guard off.
    node_guard_ports: tuple[ruleset.ProtoPorts, ...] | None = dataclasses.field(
        default_factory=lambda: containment.parse_ports(containment.DEFAULT_NODE_GUARD_PORTS)
    )
    strict: bool = True  # cut established connections a ruleset change made illegal


def add_netns_arguments(parser: argparse.ArgumentParser) -> None:
    """Where pod namespaces are searched; shared by `podseg agent` and `podseg cleanup`."""
    env = os.environ.get
    parser.add_argument(
        "--netns-dir",
        default=env("PODSEG_NETNS_DIR", "/var/run/netns"),
        help="directory of named network namespaces (PODSEG_NETNS_DIR); /proc is searched too",
    )
    parser.add_argument(
        "--no-proc-scan",
        action="store_true",
        default=env("PODSEG_NO_PROC_SCAN", "") not in ("", "0", "false"),
        help="do not search /proc/*/ns/net for pod namespaces (PODSEG_NO_PROC_SCAN)",
    )


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--node-name", default=env("NODE_NAME"), help="this node (NODE_NAME)")
    parser.add_argument(
        "--kubeconfig",
        default=env("KUBECONFIG"),
        help="kubeconfig file (KUBECONFIG); in-cluster config when absent",
    )
    add_netns_arguments(parser)
    parser.add_argument(
        "--metrics-address",
        default=env("PODSEG_METRICS_ADDRESS", "0.0.0.0:9808"),
        help="host:port serving /metrics, /healthz, /readyz (PODSEG_METRICS_ADDRESS)",
    )
    parser.add_argument(
        "--backend",
        default=env("PODSEG_BACKEND", "nftables"),
        help="nftables|iptables (PODSEG_BACKEND)",
    )
    parser.add_argument(
        "--log-format", default=env("PODSEG_LOG_FORMAT", "json"), help="json|console"
    )
    parser.add_argument("--log-level", default=env("PODSEG_LOG_LEVEL", "info"))
    parser.add_argument(
        "--resync-period",
        type=float,
        default=float(env("PODSEG_RESYNC_PERIOD", "60")),
        help="seconds between full re-checks of every local pod (PODSEG_RESYNC_PERIOD)",
    )
    add_flow_arguments(parser)
    add_containment_arguments(parser)


def add_flow_arguments(parser: argparse.ArgumentParser) -> None:
    """Drop capture: the flow log, its aggregation window, the metrics series cap."""
    env = os.environ.get
    parser.add_argument(
        "--flow-log-file",
        default=env("PODSEG_FLOW_LOG_FILE"),
        help="append dropped-flow JSON lines here instead of stdout (PODSEG_FLOW_LOG_FILE)",
    )
    parser.add_argument(
        "--flow-window",
        type=float,
        default=float(env("PODSEG_FLOW_WINDOW", "5")),
        help="seconds over which drops are aggregated into flows (PODSEG_FLOW_WINDOW)",
    )
    parser.add_argument(
        "--max-drop-series",
        type=int,
        default=int(env("PODSEG_MAX_DROP_SERIES", "1000")),
        help="cap on namespace/workload series of the drop metrics (PODSEG_MAX_DROP_SERIES)",
    )
    parser.add_argument(
        "--no-flow-capture",
        action="store_true",
        default=env("PODSEG_NO_FLOW_CAPTURE", "") not in ("", "0", "false"),
        help="do not read NFLOG drops nor drop counters (PODSEG_NO_FLOW_CAPTURE)",
    )


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def add_containment_arguments(parser: argparse.ArgumentParser) -> None:
    """Node guard and strict mode flags (quarantine needs none: it is a pod label)."""
    env = os.environ.get
    parser.add_argument(
        "--node-guard-ports",
        default=env("PODSEG_NODE_GUARD_PORTS") or containment.DEFAULT_NODE_GUARD_PORTS,
        help="node services no pod may reach, proto:port[-port],... (PODSEG_NODE_GUARD_PORTS)",
    )
    parser.add_argument(
        "--no-node-guard",
        action="store_true",
        default=not _flag(env("PODSEG_NODE_GUARD"), True),
        help="do not guard nodes from pods (PODSEG_NODE_GUARD=false)",
    )
    parser.add_argument(
        "--no-strict",
        action="store_true",
        default=not _flag(env("PODSEG_STRICT"), True),
        help="keep established connections a change made illegal (PODSEG_STRICT=false)",
    )


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--metrics-address {address!r}: expected host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def settings_from_args(args: argparse.Namespace) -> Settings:
    if not args.node_name:
        raise ConfigError("--node-name (or NODE_NAME) is required")
    if args.backend not in BACKENDS:
        raise ConfigError(f"--backend {args.backend!r}: expected one of {', '.join(BACKENDS)}")
    if args.log_format not in LOG_FORMATS:
        raise ConfigError(f"--log-format {args.log_format!r}: expected json or console")
    if args.resync_period <= 0:
        raise ConfigError("--resync-period must be positive")
    host, port = _split_address(args.metrics_address)
    if getattr(args, "flow_window", 5.0) <= 0:
        raise ConfigError("--flow-window must be positive")
    if getattr(args, "max_drop_series", 1000) < 1:
        raise ConfigError("--max-drop-series must be at least 1")
    try:
        guard_ports = containment.parse_ports(args.node_guard_ports)
    except ValueError as exc:
        raise ConfigError(f"--node-guard-ports: {exc}") from exc
    return Settings(
        node_name=args.node_name,
        kubeconfig=args.kubeconfig or None,
        netns_dir=args.netns_dir,
        scan_proc=not args.no_proc_scan,
        metrics_host=host,
        metrics_port=port,
        backend=args.backend,
        log_format=args.log_format,
        log_level=args.log_level,
        resync_period=args.resync_period,
        flow_log_file=getattr(args, "flow_log_file", None) or None,
        flow_window=getattr(args, "flow_window", 5.0),
        max_drop_series=getattr(args, "max_drop_series", 1000),
        flow_capture=not getattr(args, "no_flow_capture", False),
        node_guard_ports=None if args.no_node_guard else guard_ports,
        strict=not args.no_strict,
    )


def parse(argv: Sequence[str]) -> Settings:
    parser = argparse.ArgumentParser(prog="podseg agent")
    add_agent_arguments(parser)
    return settings_from_args(parser.parse_args(list(argv)))
