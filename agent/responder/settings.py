"""`podseg responder` flags (each with an environment variable), validated into frozen settings.

One place rejects bad values with a message naming the flag (exit code 2) before the service
binds its port or reads its token. Options are declared like the agent's (`agent.config`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping

from agent import config
from agent.responder import findings, severity

DEFAULT_MIN_SEVERITY = "critical"
# The cluster's own machinery and podseg itself: a finding never quarantines a pod there.
DEFAULT_PROTECTED_NAMESPACES = frozenset({"kube-system", "podseg-system"})


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
    protected_namespaces: frozenset[str] = DEFAULT_PROTECTED_NAMESPACES
    rate_limit: float = 20.0  # findings a second per client address; 0: no limit
    rate_burst: int = 100
    header_timeout: float = 10.0  # seconds for a request's headers (and keep-alive idle)
    body_timeout: float = 10.0  # seconds for a request's body once its headers are in
    max_connections: int = 256


def namespaces(text: str) -> frozenset[str]:
    """`a,b,c` -> the namespace names; `none` -> none."""
    if text.strip().lower() == "none":
        return frozenset()
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise ValueError("expected comma-separated namespace names, or none")
    for name in sorted(names):
        if not findings.valid_namespace(name):
            raise ValueError(f"{name!r} is not a namespace name")
    return names


def _non_negative(value: float) -> float:
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be a number, 0 or more")
    return value


OPTIONS = (
    config.Option(
        "--listen-address",
        "PODSEG_RESPONDER_LISTEN_ADDRESS",
        config.address,
        f"host:port for the webhooks, /healthz and /metrics "
        f"(default {Settings.host}:{Settings.port})",
    ),
    config.Option(
        "--token-file",
        "PODSEG_RESPONDER_TOKEN_FILE",
        config.text,
        "file holding the bearer token senders must present, e.g. a mounted Secret; "
        "required; re-read when it changes",
    ),
    config.Option(
        "--kubeconfig", "KUBECONFIG", config.text, "kubeconfig file; in-cluster config when absent"
    ),
    config.Option(
        "--min-severity",
        "PODSEG_RESPONDER_MIN_SEVERITY",
        config.text,
        "quarantine findings at or above this level: a Falco priority (emergency, alert, "
        "critical, error, warning, notice, informational, debug), a Wiz severity (critical, "
        "high=error, medium=warning, low=notice, informational), or none "
        f"(default {DEFAULT_MIN_SEVERITY})",
    ),
    config.Option(
        "--rules",
        "PODSEG_RESPONDER_RULES",
        config.text,
        "comma-separated rule names (Falco rule, Wiz control name, generic rule) that "
        "quarantine whatever their severity",
    ),
    config.Option(
        "--protected-namespaces",
        "PODSEG_RESPONDER_PROTECTED_NAMESPACES",
        namespaces,
        "comma-separated namespaces whose pods a finding never quarantines (answered 403), "
        f"or none (default {','.join(sorted(DEFAULT_PROTECTED_NAMESPACES))})",
    ),
    config.Option(
        "--rate-limit",
        "PODSEG_RESPONDER_RATE_LIMIT",
        lambda text: _non_negative(float(text)),
        "findings a second each client address may post on average, or 0 for no limit; "
        f"more are answered 429 with Retry-After (default {Settings.rate_limit:g})",
    ),
    config.Option(
        "--rate-burst",
        "PODSEG_RESPONDER_RATE_BURST",
        config.at_least_one,
        f"findings a client address may post at once (default {Settings.rate_burst})",
    ),
    config.Option(
        "--header-timeout",
        "PODSEG_RESPONDER_HEADER_TIMEOUT",
        config.positive(float),
        "seconds a connection may take to send a complete request header, from its opening "
        "or from the previous answer (so also the keep-alive idle time); then it is closed "
        f"(default {Settings.header_timeout:g})",
    ),
    config.Option(
        "--body-timeout",
        "PODSEG_RESPONDER_BODY_TIMEOUT",
        config.positive(float),
        "seconds a request's body may take once its header is in; then 408 and the "
        f"connection is closed (default {Settings.body_timeout:g})",
    ),
    config.Option(
        "--max-connections",
        "PODSEG_RESPONDER_MAX_CONNECTIONS",
        config.at_least_one,
        "open connections at most; one more is answered 503 and closed "
        f"(default {Settings.max_connections})",
    ),
    config.Option(
        "--dry-run",
        "PODSEG_RESPONDER_DRY_RUN",
        config.boolean,
        "decide and log, but never patch a pod",
        switch=True,
        switch_value=True,
    ),
    *config.LOG_OPTIONS,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_options(parser, OPTIONS)


def settings_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> Settings:
    given = config.resolve(args, OPTIONS, os.environ if environ is None else environ)
    if not given.get("token_file"):
        raise config.ConfigError("--token-file (or PODSEG_RESPONDER_TOKEN_FILE) is required")
    try:
        minimum = severity.threshold(given.get("min_severity", DEFAULT_MIN_SEVERITY))
    except severity.UnknownSeverity as exc:
        raise config.ConfigError(f"--min-severity: {exc} or none") from None
    rules = frozenset(r.strip() for r in given.get("rules", "").split(",") if r.strip())
    if minimum is None and not rules:
        raise config.ConfigError("--min-severity none needs --rules, or nothing would ever act")
    host, port = given.get("listen_address", (Settings.host, Settings.port))
    return Settings(
        token_file=given["token_file"],
        kubeconfig=given.get("kubeconfig") or None,
        host=host,
        port=port,
        policy=findings.Policy(min_severity=minimum, rules=rules),
        dry_run=given.get("dry_run", Settings.dry_run),
        protected_namespaces=given.get("protected_namespaces", Settings.protected_namespaces),
        rate_limit=given.get("rate_limit", Settings.rate_limit),
        rate_burst=given.get("rate_burst", Settings.rate_burst),
        header_timeout=given.get("header_timeout", Settings.header_timeout),
        body_timeout=given.get("body_timeout", Settings.body_timeout),
        max_connections=given.get("max_connections", Settings.max_connections),
        log_format=given.get("log_format", Settings.log_format),
        log_level=given.get("log_level", Settings.log_level),
    )
