"""The workload flow graph: the one document that `podseg flows` writes and that `podseg map`,
`podseg recommend` and `podseg whatif` read. Pure.

Why a document of its own: the per-node stores hold flows between workloads as each node saw
them; the tools that draw, recommend and replay need them merged across nodes, together with
what a selector needs to name a workload (its labels, its namespace's labels, its named ports)
and the NetworkPolicies in force when the flows were gathered, so that they work from a file
with no cluster at hand.

A workload is (namespace, name): the owning controller's name, or the pod's own name for a bare
pod (kind `Pod`). An endpoint that is no pod is `external`: its address folded to a /24 or /64.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Iterable, Mapping
from typing import Any

API_VERSION = "podseg.io/v1"
KIND = "FlowGraph"
VERDICTS = ("allowed", "dropped", "would-drop")


class GraphError(ValueError):
    """The input is not a podseg flow graph (the message says which part, for a one-line error)."""


@dataclasses.dataclass(frozen=True, order=True)
class Endpoint:
    """One end of a flow: a workload (`namespace` and `workload`) or an `external` network."""

    namespace: str = ""
    workload: str = ""
    external: str = ""

    def to_json(self) -> dict[str, str]:
        if self.external:
            return {"external": self.external}
        return {"namespace": self.namespace, "workload": self.workload}


@dataclasses.dataclass(frozen=True)
class NamedPort:
    name: str
    port: int
    protocol: str = "TCP"


@dataclasses.dataclass(frozen=True)
class Workload:
    namespace: str
    name: str
    kind: str  # Deployment, StatefulSet, DaemonSet, Job, ... or Pod for a bare pod
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)  # shared by its pods
    ports: tuple[NamedPort, ...] = ()  # named container ports its pods declare


@dataclasses.dataclass(frozen=True, order=True)
class FlowKey:
    src: Endpoint
    dst: Endpoint
    protocol: str  # TCP, UDP, SCTP, ICMP, ICMPv6
    port: int | None  # destination port; None for protocols without ports
    verdict: str  # one of VERDICTS


def sort_key(key: FlowKey) -> tuple[Endpoint, Endpoint, str, int, str]:
    """The order of flows in a document: a flow without port (None) sorts as port -1, so
    keys that differ only by a missing port compare (None and int do not)."""
    return (key.src, key.dst, key.protocol, -1 if key.port is None else key.port, key.verdict)


@dataclasses.dataclass(frozen=True)
class Flow:
    key: FlowKey
    count: int  # sampled connections (allowed) or packets (dropped, would-drop)
    first_seen: datetime.datetime
    last_seen: datetime.datetime
    nodes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class FlowGraph:
    generated: datetime.datetime
    since: datetime.datetime | None
    until: datetime.datetime
    namespaces: Mapping[str, Mapping[str, str]]  # name -> labels
    workloads: tuple[Workload, ...]
    policies: tuple[Mapping[str, Any], ...]  # NetworkPolicy objects as the API returns them
    flows: tuple[Flow, ...]


def _time(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any, where: str) -> datetime.datetime:
    if not isinstance(value, str):
        raise GraphError(f"{where}: expected an RFC 3339 time, got {value!r}")
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as err:
        raise GraphError(f"{where}: {err}") from None
    if parsed.tzinfo is None:
        raise GraphError(f"{where}: time without a zone: {value!r}")
    return parsed


def to_json(graph: FlowGraph) -> dict[str, Any]:
    """The graph as the JSON document `podseg flows -o json` prints."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "generated": _time(graph.generated),
        "window": {
            "since": _time(graph.since) if graph.since else None,
            "until": _time(graph.until),
        },
        "namespaces": {name: dict(labels) for name, labels in sorted(graph.namespaces.items())},
        "workloads": [
            {
                "namespace": w.namespace,
                "name": w.name,
                "kind": w.kind,
                "labels": dict(w.labels),
                "ports": [dataclasses.asdict(p) for p in w.ports],
            }
            for w in sorted(graph.workloads, key=lambda w: (w.namespace, w.name))
        ],
        "policies": [dict(p) for p in graph.policies],
        "flows": [
            {
                "src": f.key.src.to_json(),
                "dst": f.key.dst.to_json(),
                "protocol": f.key.protocol,
                "port": f.key.port,
                "verdict": f.key.verdict,
                "count": f.count,
                "first_seen": _time(f.first_seen),
                "last_seen": _time(f.last_seen),
                "nodes": sorted(f.nodes),
            }
            for f in sorted(graph.flows, key=lambda f: sort_key(f.key))
        ],
    }


def dumps(graph: FlowGraph) -> str:
    return json.dumps(to_json(graph), indent=2, sort_keys=False) + "\n"


def _endpoint(raw: Any, where: str) -> Endpoint:
    if not isinstance(raw, dict):
        raise GraphError(f"{where}: expected an object, got {raw!r}")
    if "external" in raw:
        return Endpoint(external=str(raw["external"]))
    namespace, workload = raw.get("namespace"), raw.get("workload")
    if not isinstance(namespace, str) or not isinstance(workload, str):
        raise GraphError(f"{where}: needs `namespace` and `workload` (or `external`)")
    return Endpoint(namespace=namespace, workload=workload)


def flow_from_json(raw: Any, where: str = "flow") -> Flow:
    """One flow in the shape `to_json` writes (also what an agent's /podseg/v1/flows serves);
    `GraphError` names the part that is wrong."""
    try:
        return _flow(raw, where)
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        if isinstance(err, GraphError):
            raise
        raise GraphError(f"{where}: {err}") from None


def _flow(raw: Any, where: str) -> Flow:
    if not isinstance(raw, dict):
        raise GraphError(f"{where}: expected an object")
    verdict = raw.get("verdict")
    if verdict not in VERDICTS:
        raise GraphError(f"{where}.verdict: {verdict!r} is none of {', '.join(VERDICTS)}")
    port, count = raw.get("port"), raw.get("count")
    if port is not None and not isinstance(port, int):
        raise GraphError(f"{where}.port: expected an integer or null, got {port!r}")
    if not isinstance(count, int) or count < 0:
        raise GraphError(f"{where}.count: expected a count, got {count!r}")
    key = FlowKey(
        src=_endpoint(raw.get("src"), f"{where}.src"),
        dst=_endpoint(raw.get("dst"), f"{where}.dst"),
        protocol=str(raw.get("protocol", "")),
        port=port,
        verdict=verdict,
    )
    return Flow(
        key=key,
        count=count,
        first_seen=_parse_time(raw.get("first_seen"), f"{where}.first_seen"),
        last_seen=_parse_time(raw.get("last_seen"), f"{where}.last_seen"),
        nodes=tuple(str(n) for n in raw.get("nodes", ())),
    )


def _workload(raw: Any, where: str) -> Workload:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise GraphError(f"{where}: expected a workload with a name")
    ports = tuple(
        NamedPort(str(p["name"]), int(p["port"]), str(p.get("protocol", "TCP")))
        for p in raw.get("ports", ())
    )
    return Workload(
        namespace=str(raw.get("namespace", "")),
        name=raw["name"],
        kind=str(raw.get("kind", "")),
        labels={str(k): str(v) for k, v in (raw.get("labels") or {}).items()},
        ports=ports,
    )


def from_json(doc: Any) -> FlowGraph:
    """Parse a document written by `to_json`; `GraphError` names the first part that is wrong."""
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise GraphError(f"not a podseg flow graph (expected kind {KIND}, {API_VERSION})")
    if doc.get("apiVersion") != API_VERSION:
        raise GraphError(f"unsupported flow graph version {doc.get('apiVersion')!r}")
    window = doc.get("window") or {}
    try:
        return FlowGraph(
            generated=_parse_time(doc.get("generated"), "generated"),
            since=_parse_time(window["since"], "window.since") if window.get("since") else None,
            until=_parse_time(window.get("until"), "window.until"),
            namespaces={
                str(n): {str(k): str(v) for k, v in (labels or {}).items()}
                for n, labels in (doc.get("namespaces") or {}).items()
            },
            workloads=tuple(
                _workload(w, f"workloads[{i}]") for i, w in enumerate(doc.get("workloads", ()))
            ),
            policies=tuple(p for p in doc.get("policies", ()) if isinstance(p, dict)),
            flows=tuple(_flow(f, f"flows[{i}]") for i, f in enumerate(doc.get("flows", ()))),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        if isinstance(err, GraphError):
            raise
        raise GraphError(f"not a podseg flow graph: {err}") from None


def loads(text: str) -> FlowGraph:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise GraphError(
            f"not a podseg flow graph: not JSON ({err.msg} at line {err.lineno})"
        ) from None
    return from_json(doc)


def merge_flows(flows: Iterable[Flow]) -> tuple[Flow, ...]:
    """One flow per key: counts summed, the earliest first and latest last seen, nodes joined
    (several nodes report the two ends of one connection, or its two halves)."""
    merged: dict[FlowKey, Flow] = {}
    for flow in flows:
        seen = merged.get(flow.key)
        if seen is None:
            merged[flow.key] = flow
            continue
        merged[flow.key] = Flow(
            key=flow.key,
            count=seen.count + flow.count,
            first_seen=min(seen.first_seen, flow.first_seen),
            last_seen=max(seen.last_seen, flow.last_seen),
            nodes=tuple(sorted(set(seen.nodes) | set(flow.nodes))),
        )
    return tuple(merged[k] for k in sorted(merged, key=sort_key))
