"""Validated, frozen settings built from flags and their environment variables.

One place decides defaults (the `Settings` dataclass: each default is stated there once) and
rejects bad values with a one-line message naming the flag or variable, before anything starts
(`podseg` exits 2). Every option is declared once (`Option`): its flag, its variable, how its
text is read. Every boolean variable is read by `boolean`, one vocabulary for all of them.
A flag given on the command line wins over its variable; a variable set to the empty string
counts as unset.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent import durations
from agent.calc import containment, ruleset

BACKENDS = ("nftables", "iptables")
LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the flag or variable."""


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
    # Pod namespaces the dataplane worker works on at once (agent.dataplane.worker.pool).
    dataplane_threads: int = 2
    watch_timeout: int = 300
    resync_period: float = 60.0
    stale_after: float = 60.0  # /readyz fails once a kind's mirror failed to refresh this long
    # Seconds between discovery checks of the network-policy-api kinds (agent.k8s.adminwatch).
    admin_discovery_period: float = 60.0
    flow_log_file: str | None = None  # None: the flow log goes to stdout
    flow_window: float = 5.0
    max_drop_series: int = 1000
    flow_capture: bool = True
    # The per-node flow store (agent.flows.flowstore); None: flows are not kept.
    flow_store: str | None = "/var/lib/podseg/flows.sqlite"
    flow_retention: float = 7 * 86400.0
    flow_store_max_flows: int = 50000
    # Read a pod's namespace back as soon as a commit not the agent's own is notified there
    # (agent.sync.tamper); without it, tampering is repaired at the next resync.
    tamper_watch: bool = True
    # Containment (agent.calc.containment): guarded node services, None = guard off.
    node_guard_ports: tuple[ruleset.ProtoPorts, ...] | None = dataclasses.field(
        default_factory=lambda: containment.parse_ports(containment.DEFAULT_NODE_GUARD_PORTS)
    )
    # More host addresses the node guard covers (a second NIC, a service address on lo).
    node_guard_extra_addresses: tuple[ruleset.AddrRange, ...] = ()
    # Namespaces exempt from the node guard by name (besides podseg.io/node-guard=off).
    node_guard_exempt_namespaces: tuple[str, ...] = containment.DEFAULT_NODE_GUARD_EXEMPT
    strict: bool = True  # cut established connections a ruleset change made illegal
    # A pod's podseg.io/mode label may loosen its namespace's mode (visibility in an
    # enforcing namespace): off, since whoever can create a pod could switch off enforcement.
    allow_pod_visibility: bool = False
    # The widest forensic source a quarantine annotation may open (IPv4, IPv6 prefix lengths).
    quarantine_widest_source: tuple[int, int] = containment.WIDEST_ALLOW_FROM
    # Policy status (agent.sync.leader): the namespace of the Leases, and their duration.
    lease_namespace: str = "podseg-system"
    lease_duration: int = 15
    policy_status: bool = True
    # The unix socket podseg-cni asks on (agent.cni, docs/cni.md); None: not served.
    cni_socket: str | None = None


# -- reading values ------------------------------------------------------------------------
def boolean(text: str) -> bool:
    """The one vocabulary of every boolean variable: 1/true/yes/on, 0/false/no/off."""
    value = text.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(f"expected one of {', '.join(TRUE + FALSE)}")


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def read(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise ValueError("must be positive")
        return value

    return read


def at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def choice(options: Sequence[str]) -> Callable[[str], str]:
    def read(text: str) -> str:
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return text

    return read


def address(text: str) -> tuple[str, int]:
    """`host:port` (IPv6 hosts in brackets) -> (host, port); an empty host means 0.0.0.0."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def text(value: str) -> str:
    return value


def dns_label(value: str) -> str:
    """A Kubernetes namespace name (RFC 1123 label)."""
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", value):
        raise ValueError("not a valid namespace name")
    return value


# -- options -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Option:
    """One setting's flag and environment variable. A `switch` is a flag without a value
    (`--no-strict`) that sets the setting to `switch_value`; its variable holds a boolean
    that names the setting (`PODSEG_STRICT`) or, with `env_inverted`, its switch
    (`PODSEG_NO_FLOW_CAPTURE`)."""

    flag: str
    env: str | None
    read: Callable[[str], Any]
    help: str
    switch: bool = False
    switch_value: bool = False
    env_inverted: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def add(self, parser: argparse.ArgumentParser) -> None:
        help_text = self.help + (f" ({self.env})" if self.env else "")
        if self.switch:
            parser.add_argument(
                self.flag, dest=self.dest, action="store_true", default=None, help=help_text
            )
        else:
            parser.add_argument(self.flag, dest=self.dest, default=None, help=help_text)

    def value(self, args: argparse.Namespace, environ: Mapping[str, str]) -> Any:
        """The option's value from the command line, else its variable; None when neither
        is set. ConfigError (naming the flag or variable) when it cannot be read."""
        given = getattr(args, self.dest, None)
        if given is not None:
            return self.switch_value if self.switch else self._read(self.flag, str(given))
        raw = environ.get(self.env, "") if self.env else ""
        if raw.strip() == "":
            return None
        if self.switch:
            said = self._read(self.env or self.flag, raw, boolean)
            return (not said) if self.env_inverted else said
        return self._read(self.env or self.flag, raw)

    def _read(self, where: str, raw: str, read: Callable[[str], Any] | None = None) -> Any:
        try:
            return (read or self.read)(raw)
        except ValueError as exc:
            raise ConfigError(f"{where} {raw!r}: {exc}") from None


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    for option in options:
        option.add(parser)


def default(field: str) -> Any:
    """The default of a `Settings` field (for help texts)."""
    spec = Settings.__dataclass_fields__[field]
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return spec.default


NETNS_OPTIONS = (
    Option(
        "--netns-dir",
        "PODSEG_NETNS_DIR",
        text,
        f"directory of named network namespaces (default {default('netns_dir')}); "
        "/proc is searched too",
    ),
    Option(
        "--no-proc-scan",
        "PODSEG_NO_PROC_SCAN",
        boolean,
        "do not search /proc/*/ns/net for pod namespaces",
        switch=True,
        env_inverted=True,
    ),
)
LOG_OPTIONS = (
    Option("--log-format", "PODSEG_LOG_FORMAT", choice(LOG_FORMATS), "json|console"),
    Option("--log-level", "PODSEG_LOG_LEVEL", choice(LOG_LEVELS), "|".join(LOG_LEVELS)),
)
AGENT_OPTIONS = (
    Option("--node-name", "NODE_NAME", text, "this node (required)"),
    Option("--kubeconfig", "KUBECONFIG", text, "kubeconfig file; in-cluster config when absent"),
    *NETNS_OPTIONS,
    Option(
        "--metrics-address",
        "PODSEG_METRICS_ADDRESS",
        address,
        f"host:port serving /metrics, /healthz, /readyz (default "
        f"{default('metrics_host')}:{default('metrics_port')})",
    ),
    Option("--backend", "PODSEG_BACKEND", choice(BACKENDS), "|".join(BACKENDS)),
    Option(
        "--dataplane-threads",
        "PODSEG_DATAPLANE_THREADS",
        at_least_one,
        f"pod namespaces the dataplane worker commits at once, a thread each (default "
        f"{default('dataplane_threads')})",
    ),
    *LOG_OPTIONS,
    Option(
        "--resync-period",
        "PODSEG_RESYNC_PERIOD",
        positive(float),
        f"seconds between full re-checks of every local pod (default {default('resync_period')})",
    ),
    Option(
        "--stale-after",
        "PODSEG_STALE_AFTER",
        positive(float),
        f"seconds of failed API refreshes after which /readyz fails (default "
        f"{default('stale_after')}); enforcement goes on meanwhile",
    ),
    Option(
        "--admin-discovery-period",
        "PODSEG_ADMIN_DISCOVERY_PERIOD",
        positive(float),
        f"seconds between checks of which network-policy-api CRDs are served (default "
        f"{default('admin_discovery_period')})",
    ),
    Option(
        "--flow-log-file",
        "PODSEG_FLOW_LOG_FILE",
        text,
        "append dropped-flow JSON lines here instead of stdout",
    ),
    Option(
        "--flow-window",
        "PODSEG_FLOW_WINDOW",
        positive(float),
        f"seconds over which drops are aggregated into flows (default {default('flow_window')})",
    ),
    Option(
        "--max-drop-series",
        "PODSEG_MAX_DROP_SERIES",
        at_least_one,
        f"cap on namespace/workload series of the drop metrics "
        f"(default {default('max_drop_series')})",
    ),
    Option(
        "--flow-store",
        "PODSEG_FLOW_STORE",
        text,
        f"SQLite file of this node's workload flows, read by `podseg flows` (default "
        f"{default('flow_store')}; empty: keep no flows)",
    ),
    Option(
        "--flow-retention",
        "PODSEG_FLOW_RETENTION",
        durations.parse,
        "how long a flow not seen again stays in the flow store, e.g. 12h, 7d (default 7d)",
    ),
    Option(
        "--flow-store-max-flows",
        "PODSEG_FLOW_STORE_MAX_FLOWS",
        at_least_one,
        f"cap on flows in the flow store; past it the least recently seen go "
        f"(default {default('flow_store_max_flows')})",
    ),
    Option(
        "--no-flow-capture",
        "PODSEG_NO_FLOW_CAPTURE",
        boolean,
        "do not read NFLOG drops nor drop counters",
        switch=True,
        env_inverted=True,
    ),
    Option(
        "--node-guard-ports",
        "PODSEG_NODE_GUARD_PORTS",
        containment.parse_ports,
        f"node services no pod may reach, proto:port[-port],... "
        f"(default {containment.DEFAULT_NODE_GUARD_PORTS})",
    ),
    Option(
        "--node-guard-extra-addresses",
        "PODSEG_NODE_GUARD_EXTRA_ADDRESSES",
        containment.parse_addresses,
        "more host addresses (IPs or CIDRs, comma-separated) the node guard covers like node "
        "addresses, e.g. a second NIC or a service address on the node's loopback",
    ),
    Option(
        "--node-guard-exempt-namespaces",
        "PODSEG_NODE_GUARD_EXEMPT_NAMESPACES",
        containment.parse_namespaces,
        "namespaces whose pods the node guard leaves alone, comma-separated, - for none "
        f"(default {','.join(containment.DEFAULT_NODE_GUARD_EXEMPT)}); namespaces labelled "
        f"{containment.NODE_GUARD_LABEL}=off are exempt as well",
    ),
    Option(
        "--no-node-guard",
        "PODSEG_NODE_GUARD",
        boolean,
        "do not guard nodes from pods (PODSEG_NODE_GUARD=false)",
        switch=True,
    ),
    Option(
        "--quarantine-widest-source",
        "PODSEG_QUARANTINE_WIDEST_SOURCE",
        containment.parse_widest,
        "shortest IPv4,IPv6 prefix a podseg.io/quarantine-allow-from entry may have "
        f"(default {','.join(map(str, containment.WIDEST_ALLOW_FROM))}); /0 is always refused",
    ),
    Option(
        "--allow-pod-visibility",
        "PODSEG_ALLOW_POD_VISIBILITY",
        boolean,
        "let a pod's podseg.io/mode=visibility label loosen an enforcing namespace",
        switch=True,
        switch_value=True,
    ),
    Option(
        "--cni-socket",
        "PODSEG_CNI_SOCKET",
        text,
        "serve the podseg-cni plugin on this unix socket, e.g. /run/podseg/cni.sock "
        "(default: not served; - for off); docs/cni.md",
    ),
    Option(
        "--no-tamper-watch",
        "PODSEG_TAMPER_WATCH",
        boolean,
        "repair tampered rules at the next resync only, not on nftables change notifications "
        "(PODSEG_TAMPER_WATCH=false)",
        switch=True,
    ),
    Option(
        "--no-strict",
        "PODSEG_STRICT",
        boolean,
        "keep established connections a change made illegal (PODSEG_STRICT=false)",
        switch=True,
    ),
    Option(
        "--lease-namespace",
        "POD_NAMESPACE",
        dns_label,
        f"namespace of the policy-status Leases (default {default('lease_namespace')})",
    ),
    Option(
        "--lease-duration",
        "PODSEG_LEASE_DURATION",
        at_least_one,
        f"seconds a policy-status leader holds its Lease unrenewed (default "
        f"{default('lease_duration')}); the Leases are written every third of it",
    ),
    Option(
        "--no-policy-status",
        "PODSEG_POLICY_STATUS",
        boolean,
        "neither report this node's programmed policies nor stand for the policy-status "
        "writer (PODSEG_POLICY_STATUS=false)",
        switch=True,
    ),
)


def resolve(
    args: argparse.Namespace, options: Sequence[Option], environ: Mapping[str, str]
) -> dict[str, Any]:
    """Every option that is set, by dest (flag name with underscores), read and checked."""
    found = {option.dest: option.value(args, environ) for option in options}
    return {dest: value for dest, value in found.items() if value is not None}


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, AGENT_OPTIONS)


def add_netns_arguments(parser: argparse.ArgumentParser) -> None:
    """Where pod namespaces are searched; shared by `podseg agent` and `podseg cleanup`."""
    add_options(parser, NETNS_OPTIONS)


def settings_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> Settings:
    """The agent's settings from its parsed flags and `environ` (default: the process's)."""
    given = resolve(args, AGENT_OPTIONS, os.environ if environ is None else environ)
    if not given.get("node_name"):
        raise ConfigError("--node-name (or NODE_NAME) is required")
    fields: dict[str, Any] = {
        "node_name": given["node_name"],
        "kubeconfig": given.get("kubeconfig") or None,
    }
    renamed = {
        "no_proc_scan": "scan_proc",
        "no_flow_capture": "flow_capture",
        "no_strict": "strict",
        "no_policy_status": "policy_status",
        "no_tamper_watch": "tamper_watch",
    }
    for dest, value in given.items():
        if dest in renamed:
            fields[renamed[dest]] = value
        elif dest in Settings.__dataclass_fields__ and dest not in fields:
            fields[dest] = value
    if "flow_log_file" in given:
        fields["flow_log_file"] = given["flow_log_file"] or None
    if "flow_store" in given:
        fields["flow_store"] = given["flow_store"] or None
    if "metrics_address" in given:
        fields["metrics_host"], fields["metrics_port"] = given["metrics_address"]
    if "cni_socket" in given:
        fields["cni_socket"] = None if given["cni_socket"] in ("", "-") else given["cni_socket"]
    if given.get("no_node_guard") is False:
        fields["node_guard_ports"] = None
    return Settings(**fields)


def parse(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="podseg agent")
    add_agent_arguments(parser)
    return settings_from_args(parser.parse_args(list(argv)), environ)
