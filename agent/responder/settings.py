"""`podseg responder` flags (each with an environment variable), validated into frozen settings.

One place rejects bad values with a message naming the flag (exit code 2) before the service
binds its port or reads its token.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from agent import config
from agent.responder import findings, severity

DEFAULT_LISTEN = "0.0.0.0:8080"
DEFAULT_MIN_SEVERITY = "critical"


@dataclasses.dataclass(frozen=True)
class Settings:
    token_file: str
    kubeconfig: str | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    policy: findings.Policy = dataclasses.field(default_factory=findings.Policy)
    dry_run: bool = False
    log_format: str = "json"
    log_level: str = "info"
    api_timeout: float = 10.0
    max_body_bytes: int = 1 << 20


def _truthy(value: str | None) -> bool:
    return (value or "") not in ("", "0", "false", "no")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--listen-address",
        default=env("PODSEG_RESPONDER_LISTEN_ADDRESS", DEFAULT_LISTEN),
        help="host:port for the webhooks, /healthz and /metrics (PODSEG_RESPONDER_LISTEN_ADDRESS)",
    )
    parser.add_argument(
        "--token-file",
        default=env("PODSEG_RESPONDER_TOKEN_FILE"),
        help="file holding the bearer token senders must present, e.g. a mounted Secret "
        "(PODSEG_RESPONDER_TOKEN_FILE); required; re-read when it changes",
    )
    parser.add_argument(
        "--kubeconfig",
        default=env("KUBECONFIG"),
        help="kubeconfig file (KUBECONFIG); in-cluster config when absent",
    )
    parser.add_argument(
        "--min-severity",
        default=env("PODSEG_RESPONDER_MIN_SEVERITY", DEFAULT_MIN_SEVERITY),
        help="quarantine findings at or above this level: a Falco priority (emergency, alert, "
        "critical, error, warning, notice, informational, debug), a Wiz severity (critical, "
        "high=error, medium=warning, low=notice, informational), or none "
        "(PODSEG_RESPONDER_MIN_SEVERITY)",
    )
    parser.add_argument(
        "--rules",
        default=env("PODSEG_RESPONDER_RULES", ""),
        help="comma-separated rule names (Falco rule, Wiz control name, generic rule) that "
        "quarantine whatever their severity (PODSEG_RESPONDER_RULES)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=_truthy(env("PODSEG_RESPONDER_DRY_RUN")),
        help="decide and log, but never patch a pod (PODSEG_RESPONDER_DRY_RUN)",
    )
    parser.add_argument(
        "--log-format", default=env("PODSEG_LOG_FORMAT", "json"), help="json|console"
    )
    parser.add_argument("--log-level", default=env("PODSEG_LOG_LEVEL", "info"))


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise config.ConfigError(f"--listen-address {address!r}: expected host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def settings_from_args(args: argparse.Namespace) -> Settings:
    if not args.token_file:
        raise config.ConfigError("--token-file (or PODSEG_RESPONDER_TOKEN_FILE) is required")
    if args.log_format not in config.LOG_FORMATS:
        raise config.ConfigError(f"--log-format {args.log_format!r}: expected json or console")
    try:
        minimum = severity.threshold(args.min_severity)
    except severity.UnknownSeverity as exc:
        raise config.ConfigError(f"--min-severity: {exc} or none") from None
    rules = frozenset(r.strip() for r in args.rules.split(",") if r.strip())
    if minimum is None and not rules:
        raise config.ConfigError("--min-severity none needs --rules, or nothing would ever act")
    host, port = split_address(args.listen_address)
    return Settings(
        token_file=args.token_file,
        kubeconfig=args.kubeconfig or None,
        host=host,
        port=port,
        policy=findings.Policy(min_severity=minimum, rules=rules),
        dry_run=bool(args.dry_run),
        log_format=args.log_format,
        log_level=args.log_level,
    )
