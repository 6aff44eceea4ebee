"""`podseg flows`: every node's flow store gathered into one workload flow graph.

Each agent keeps the flows its pods' rules sampled (agent.flows.flowstore) and serves them on
its local endpoint (`GET /podseg/v1/flows`, agent.localapi); this command reads every agent
through the API server's proxy (or `--agent` URLs), merges their flows (`graph.merge_flows`:
one connection is counted by one node only, so counts add up) and adds what a selector needs
to name a workload: its labels, its namespace's labels, its named ports, and the
NetworkPolicies in force. `-o json` prints the `agent.flows.graph` document that `podseg map`,
`podseg recommend` and `podseg whatif` read; `-o table` one line per flow.

`gather` is the entry point for those commands too. An unknown namespace is an error (exit 2,
one line); an agent that does not answer is a warning line, the others are still gathered.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TextIO

from agent import durations, model
from agent.commands import agents as agent_endpoints
from agent.flows import graph
from agent.k8s import convert, rest, watch

COLUMNS = ("SOURCE", "DESTINATION", "PROTOCOL", "PORT", "VERDICT", "COUNT", "LAST SEEN")
# Labels that differ between revisions of one workload: never a selector of the workload.
REVISION_LABELS = ("pod-template-hash", "controller-revision-hash", "pod-template-generation")


class GatherError(Exception):
    """The flows cannot be gathered as asked (the message is the one line to print)."""


class FlowSource(Protocol):
    """What `gather` needs of an agent endpoint (`agents.Agent`; fakes in tests)."""

    node: str

    def flows(self, query: Mapping[str, str]) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The API objects a flow graph describes, as listed (raw)."""

    pods: tuple[Mapping[str, Any], ...]
    namespaces: tuple[Mapping[str, Any], ...]
    policies: tuple[Mapping[str, Any], ...]


def list_cluster(api: rest.Api) -> Cluster:
    """Pods, namespaces and NetworkPolicies, each LISTed once."""

    def items(resource: str) -> tuple[Mapping[str, Any], ...]:
        return tuple(watch.list_all(resource, rest.lister(api, resource)).items)

    return Cluster(items("pods"), items("namespaces"), items("networkpolicies"))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def gather(
    api: rest.Api | None,
    *,
    agent_urls: Sequence[str] = (),
    namespace: str | None = None,
    since: float | None = None,
    verdict: str | None = None,
    warn: Callable[[str], None] = _stderr,
    now: datetime.datetime | None = None,
    cluster: Cluster | None = None,
    sources: Mapping[str, FlowSource] | None = None,
) -> graph.FlowGraph:
    """One `graph.FlowGraph` of every node's flow store.

    api:        the operator's API client (`agent.k8s.clients.api_client(kubeconfig)`): lists
                pods, namespaces and NetworkPolicies, and reaches the agents through the API
                server's proxy. May be None only when both `cluster` and `sources` are given.
    agent_urls: read these agent endpoints directly (a port-forward, a test bed) instead of
                discovering the agent pods.
    namespace:  only flows with an end in this namespace (and its workloads and policies);
                `GatherError` when no such namespace exists.
    since:      only flows last seen in the last `since` seconds; None: all the stores hold.
    verdict:    only flows of this verdict (`graph.VERDICTS`); None: all.
    warn:       called with one line per agent that did not answer (default: stderr).
    now:        the graph's `until` and `generated` time (default: the current time).
    cluster, sources: the listed objects and the agents by node, instead of reading them
                through `api` (tests).
    Raises `GatherError` (unknown namespace, bad verdict) and lets the client's errors
    through when the API itself cannot be read.
    """
    if verdict is not None and verdict not in graph.VERDICTS:
        raise GatherError(f"verdict {verdict!r} is none of {', '.join(graph.VERDICTS)}")
    now = now or datetime.datetime.now(datetime.UTC)
    if cluster is None:
        assert api is not None, "gather needs an API client or a listed cluster"
        cluster = list_cluster(api)
    known = {str((ns.get("metadata") or {}).get("name")) for ns in cluster.namespaces}
    if namespace is not None and namespace not in known:
        raise GatherError(f"namespace {namespace!r} not found")
    if sources is None:
        assert api is not None or agent_urls, "gather needs an API client or agent URLs"
        sources = _sources(api, agent_urls)
    query = {"since": f"{max(1, round(since))}s"} if since is not None else {}
    if verdict:
        query["verdict"] = verdict
    if namespace:
        query["namespace"] = namespace
    flows: list[graph.Flow] = []
    for node, source in sorted(sources.items()):
        flows += _node_flows(node, source, query, warn)
    merged = graph.merge_flows(flows)
    return build(cluster, merged, namespace, since, now)


def _sources(api: rest.Api | None, urls: Sequence[str]) -> dict[str, agent_endpoints.Agent]:
    if urls:
        return {url: agent_endpoints.Agent(url, api=api, url=url) for url in urls}
    assert api is not None
    return agent_endpoints.discover(api)


def _node_flows(
    node: str, source: FlowSource, query: Mapping[str, str], warn: Callable[[str], None]
) -> list[graph.Flow]:
    try:
        answer = source.flows(query)
    except agent_endpoints.AgentUnreachable as exc:
        warn(f"warning: {exc}; its flows are missing")
        return []
    if "error" in answer:
        warn(f"warning: agent of node {node}: {answer['error']}; its flows are missing")
        return []
    name = str(answer.get("node") or node)
    out = []
    for i, raw in enumerate(answer.get("flows") or []):
        try:
            flow = graph.flow_from_json(raw, f"flows[{i}]")
        except graph.GraphError as exc:
            warn(f"warning: agent of node {name}: {exc}; flow skipped")
            continue
        out.append(dataclasses.replace(flow, nodes=(name,)))
    return out


def build(
    cluster: Cluster,
    flows: Iterable[graph.Flow],
    namespace: str | None,
    since: float | None,
    now: datetime.datetime,
) -> graph.FlowGraph:
    """The graph document of `flows` with the workloads, namespaces and policies they need."""
    flows = tuple(flows)
    wanted = {namespace} if namespace else None
    if wanted is not None:
        for flow in flows:  # the other ends' namespaces, so their workloads are described
            wanted.update(e.namespace for e in (flow.key.src, flow.key.dst) if e.namespace)
    namespaces = {
        str(meta.get("name")): {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        for meta in ((ns.get("metadata") or {}) for ns in cluster.namespaces)
        if wanted is None or meta.get("name") in wanted
    }
    pods = [convert.pod(raw) for raw in cluster.pods]
    workloads = workloads_of(p for p in pods if p.namespace in namespaces and not p.host_network)
    policies = tuple(
        _policy(p)
        for p in cluster.policies
        if wanted is None or (p.get("metadata") or {}).get("namespace") in wanted
    )
    return graph.FlowGraph(
        generated=now,
        since=now - datetime.timedelta(seconds=since) if since is not None else None,
        until=now,
        namespaces=namespaces,
        workloads=workloads,
        policies=policies,
        flows=flows,
    )


def workloads_of(pods: Iterable[model.Pod]) -> tuple[graph.Workload, ...]:
    """One workload per (namespace, owner name or bare pod name): the labels all its pods
    share (less revision hashes), its kind, and the named container ports its pods declare."""
    groups: dict[tuple[str, str], list[model.Pod]] = {}
    for pod in pods:
        groups.setdefault((pod.namespace, pod.workload or pod.name), []).append(pod)
    out = []
    for (namespace, name), members in sorted(groups.items()):
        shared = dict(members[0].labels)
        for pod in members[1:]:
            shared = {k: v for k, v in shared.items() if pod.labels.get(k) == v}
        for key in REVISION_LABELS:
            shared.pop(key, None)
        ports = {
            graph.NamedPort(p.name, p.port, p.protocol)
            for pod in members
            for p in pod.container_ports
            if p.name
        }
        kind = members[0].workload_kind if members[0].workload else "Pod"
        out.append(
            graph.Workload(
                namespace,
                name,
                kind or "Pod",
                shared,
                tuple(sorted(ports, key=lambda p: (p.name, p.port, p.protocol))),
            )
        )
    return tuple(out)


def _policy(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A NetworkPolicy as applied: kind, metadata (no managed fields), spec."""
    meta = dict(raw.get("metadata") or {})
    for noise in ("managedFields", "resourceVersion", "uid", "generation", "creationTimestamp"):
        meta.pop(noise, None)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": dict(raw.get("spec") or {}),
    }


# -- the command ---------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", help="only flows with an end in this namespace")
    parser.add_argument(
        "--since", help="only flows seen in this last while, e.g. 30m, 1h, 7d (default: all)"
    )
    parser.add_argument("--verdict", choices=graph.VERDICTS, help="only flows of this verdict")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.add_argument(
        "--agent",
        action="append",
        default=[],
        metavar="URL",
        help="read this agent endpoint directly (repeatable) instead of through the API proxy",
    )


def main(args: argparse.Namespace, api: rest.Api, out: TextIO) -> int:
    try:
        since = durations.parse(args.since) if args.since else None
    except ValueError as exc:
        raise GatherError(f"--since: {exc}") from None
    found = gather(
        api, agent_urls=args.agent, namespace=args.namespace, since=since, verdict=args.verdict
    )
    if args.output == "json":
        out.write(graph.dumps(found))
    else:
        render(found, out)
    return 0


def _end(endpoint: graph.Endpoint) -> str:
    if endpoint.external:
        return endpoint.external
    return f"{endpoint.namespace}/{endpoint.workload}"


def render(found: graph.FlowGraph, out: TextIO) -> None:
    table: list[tuple[str, ...]] = [COLUMNS]
    for f in sorted(found.flows, key=lambda f: graph.sort_key(f.key)):
        table.append(
            (
                _end(f.key.src),
                _end(f.key.dst),
                f.key.protocol,
                "-" if f.key.port is None else str(f.key.port),
                f.key.verdict,
                str(f.count),
                f.last_seen.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)
