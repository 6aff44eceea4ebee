"""`podseg explain SRC DST`: why a connection is allowed or blocked, from the API alone.

SRC and DST are `namespace/pod`, a pod IP, or an address outside the cluster. The cluster is
listed once and the same pure calculation an agent runs decides each side
(`agent.calc.explain`); the answer names quarantine, node guard, mode, the policies that
isolate each side and the rule that allows the connection, or that none does. Exit codes:
0 allowed, 1 blocked (denied or would-drop), 2 bad input (unknown pod, pod without IP, bad
port or protocol, no API access).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from agent import config, store
from agent.calc import desired as calc_desired
from agent.calc import explain as calc_explain
from agent.calc import ruleset
from agent.commands import agents as agent_endpoints


class InputError(ValueError):
    """SRC, DST, port or protocol cannot be used; the message says why."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SRC", help="namespace/pod, a pod IP, or an address")
    parser.add_argument("destination", metavar="DST", help="namespace/pod, a pod IP or address")
    parser.add_argument("--port", help="destination port (TCP, UDP, SCTP)")
    parser.add_argument("--protocol", default="tcp", help="tcp|udp|sctp (default tcp)")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser.add_argument(
        "--live",
        action="store_true",
        help="also ask each side's node agent what it programmed and what its kernel holds",
    )
    parser.add_argument(
        "--agent-url",
        action="append",
        default=[],
        help="with --live: read this agent endpoint directly (repeatable) instead of through "
        "the API server's proxy",
    )
    config.add_options(parser, (config.AGENT_OPTIONS[1],))  # --kubeconfig / KUBECONFIG


def endpoint(text: str, cluster: store.Store, family: int | None = None) -> calc_explain.Endpoint:
    """`namespace/pod`, a pod IP or an outside address; InputError when unusable. With
    `family`, a pod answers with its address of that family."""
    if "/" in text and not _is_network(text):
        pod = cluster.pods.get(text)
        if pod is None:
            raise InputError(f"no pod {text} in the cluster")
        addresses = [
            a for a in pod.ips if family is None or ipaddress.ip_address(a).version == family
        ]
        if not addresses:
            raise InputError(
                f"pod {text} has no IP" + (f"v{family} address" if pod.ips else " yet")
            )
        return calc_explain.Endpoint(addresses[0], pod)
    try:
        address = str(ipaddress.ip_address(text))
    except ValueError as exc:
        raise InputError(f"{text!r} is neither namespace/pod nor an IP address") from exc
    owner = next(
        (p for p in cluster.pods.values() if address in p.ips and not p.host_network), None
    )
    return calc_explain.Endpoint(address, owner)


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def port_and_protocol(port: str | None, protocol: str) -> tuple[int | None, str]:
    proto = protocol.upper()
    if proto not in ruleset.PROTOCOL_NUMBERS:
        raise InputError(f"--protocol {protocol!r}: expected tcp, udp or sctp")
    if port is None:
        return None, proto
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InputError(f"--port {port!r}: expected a number from 1 to 65535")
    return int(port), proto


def explain(
    cluster: store.Store,
    source: str,
    destination: str,
    port: int | None,
    protocol: str,
    settings: config.Settings,
) -> calc_explain.Explanation:
    """The explanation of SRC -> DST in the snapshot `cluster`, as an agent with `settings`
    would decide it."""
    dst = endpoint(destination, cluster)
    src = endpoint(source, cluster, ipaddress.ip_address(dst.address).version)
    if (
        dst.pod is not None
        and ipaddress.ip_address(src.address).version != ipaddress.ip_address(dst.address).version
    ):
        dst = endpoint(destination, cluster, ipaddress.ip_address(src.address).version)
    shared = calc_desired.Cluster.of(
        pods=cluster.pods.values(),
        namespaces=cluster.namespaces,
        policies=cluster.policies.values(),
        nodes=cluster.nodes.values(),
        services=cluster.services.values(),
        endpointslices=cluster.endpointslices.values(),
        guard_ports=settings.node_guard_ports,
        admin=cluster.admin_policies(),
    )
    shared = dataclasses.replace(
        shared,
        pod_may_loosen_mode=settings.allow_pod_visibility,
        allow_from_widest=settings.quarantine_widest_source,
    )
    return calc_explain.explain(src, dst, protocol, port, shared)


@dataclasses.dataclass(frozen=True)
class Live:
    """What a side's node agent says: the verdict of the ruleset it programmed, and whether
    the pod's namespace holds exactly that ruleset now."""

    node: str
    verdict: str | None
    programmed: str | None
    kernel: str | None
    error: str | None = None

    @property
    def agrees(self) -> bool:
        return self.error is None and self.programmed is not None and self.programmed == self.kernel


def live_sides(
    found: calc_explain.Explanation,
    cluster: store.Store,
    agents: Mapping[str, agent_endpoints.Agent],
    addresses: Mapping[str, str],
) -> list[Live]:
    """Ask the agent of each side's node (`addresses`: pod key -> the address it uses)."""
    out = []
    for side in found.sides:
        pod = cluster.pods[side.pod]
        agent = agents.get(pod.node_name or "")
        if agent is None or side.direction not in ("ingress", "egress"):
            out.append(Live(pod.node_name or "?", None, None, None, "no agent on the pod's node"))
            continue
        peer = found.source if side.direction == "ingress" else found.destination
        query = {
            "peer": addresses.get(peer, peer),
            "direction": side.direction,
            "protocol": found.protocol,
        }
        if found.port is not None:
            query["port"] = str(found.port)
        try:
            seen = agent.local_pod(side.pod, query)
        except agent_endpoints.AgentUnreachable as exc:
            out.append(Live(agent.node, None, None, None, str(exc)))
            continue
        out.append(
            Live(
                agent.node,
                seen.get("verdict"),
                seen.get("fingerprint"),
                seen.get("kernel_fingerprint"),
                seen.get("error"),
            )
        )
    return out


def as_json(found: calc_explain.Explanation, live: list[Live] | None = None) -> dict[str, Any]:
    out = dataclasses.asdict(found)
    out["verdict"] = found.verdict
    if live is not None:
        for side, seen in zip(out["sides"], live, strict=False):
            side["live"] = {**dataclasses.asdict(seen), "agrees": seen.agrees}
    return out


def as_text(found: calc_explain.Explanation, out: TextIO, live: list[Live] | None = None) -> None:
    where = f"{found.protocol}/{found.port}" if found.port is not None else found.protocol
    print(f"{found.source} -> {found.destination} {where}: {found.verdict.upper()}", file=out)
    for i, side in enumerate(found.sides):
        print(f"  {side.direction} of {side.pod}: {side.verdict}", file=out)
        for reason in side.reasons:
            print(f"    - {reason}", file=out)
        if not side.agrees:
            print("    ! the rule-by-rule reasons disagree with the compiled ruleset", file=out)
        if live is not None and i < len(live):
            _live_line(side, live[i], out)
    if not found.sides:
        print("  neither end is a pod of the cluster: podseg decides nothing here", file=out)


def _live_line(side: calc_explain.Side, seen: Live, out: TextIO) -> None:
    if seen.error is not None:
        print(f"    live ({seen.node}): {seen.error}", file=out)
        return
    kernel = "holds it" if seen.agrees else f"holds {seen.kernel or 'no podseg table'}"
    same = "agrees" if seen.verdict == side.verdict and seen.agrees else "DISAGREES"
    print(
        f"    live ({seen.node}): programmed ruleset {seen.programmed} says {seen.verdict}; "
        f"the kernel {kernel}: {same}",
        file=out,
    )


def main(
    args: argparse.Namespace,
    cluster: store.Store,
    out: TextIO = sys.stdout,
    live: Mapping[str, agent_endpoints.Agent] | None = None,
) -> int:
    """Print the explanation; 0 allowed, 1 blocked, 2 bad input."""
    try:
        port, protocol = port_and_protocol(args.port, args.protocol)
        found = explain(
            cluster, args.source, args.destination, port, protocol, config.Settings("", None)
        )
    except InputError as exc:
        print(f"podseg explain: {exc}", file=sys.stderr)
        return 2
    seen = None
    if live is not None:
        addresses = {
            found.source: found.source_address,
            found.destination: found.destination_address,
        }
        seen = live_sides(found, cluster, live, addresses)
    if args.output == "json":
        json.dump(as_json(found, seen), out, indent=2)
        out.write("\n")
    else:
        as_text(found, out, seen)
    return 0 if found.verdict == calc_explain.ALLOWED else 1
