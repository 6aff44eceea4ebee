"""Where everything goes on the workload map (`podseg map`). Pure and deterministic: the same
graph always gives the same picture, so a map can be committed, diffed and tested.

Why a layout of its own instead of a graph-drawing library: the map has one fixed shape that
reads well for workload graphs, and no dependency is needed for it. Traffic runs left to right:
a workload stands one column right of the furthest workload that connects to it (its rank);
every workload has a row of its own and a namespace is a box around a band of rows, so no edge
runs along a row through another node. External networks that only send stand in a column on
the left, the others in one on the right, each level with the workloads it talks to. One edge
per (source, destination, verdict), labelled with its ports.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from agent.flows import graph

NODE_W, NODE_H = 170, 40
GAP_Y, PAD, TITLE = 18, 16, 26
COLUMN_GAP = 150
TOP = 20
VERDICT_ORDER = {verdict: i for i, verdict in enumerate(graph.VERDICTS)}


@dataclasses.dataclass(frozen=True)
class Box:
    namespace: str
    x: float
    y: float
    w: float
    h: float


@dataclasses.dataclass(frozen=True)
class Node:
    id: str  # namespace/workload, or the external network
    label: str
    detail: str  # the workload kind, or "external"
    x: float
    y: float
    w: float = NODE_W
    h: float = NODE_H

    @property
    def external(self) -> bool:
        return self.detail == "external"


@dataclasses.dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    verdict: str
    label: str  # the ports, e.g. "TCP 80, 443 · UDP 53"
    points: tuple[tuple[float, float], ...]  # a cubic Bézier: start, two controls, end
    label_at: tuple[float, float]
    count: int = 0  # connections (allowed) or packets (dropped, would-drop) seen


@dataclasses.dataclass(frozen=True)
class Layout:
    width: float
    height: float
    boxes: tuple[Box, ...]
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]


def node_id(end: graph.Endpoint) -> str:
    return end.external or f"{end.namespace}/{end.workload}"


def selected_flows(graph_doc: graph.FlowGraph, namespace: str | None) -> list[graph.Flow]:
    """The flows the map shows: all, or those with one end in `namespace`."""
    return [
        f
        for f in graph_doc.flows
        if namespace is None or namespace in (f.key.src.namespace, f.key.dst.namespace)
    ]


def _ranks(ids: Iterable[str], pairs: set[tuple[str, str]]) -> dict[str, int]:
    """Longest-path depth of each node (bounded: a cycle stops growing after len(ids) rounds)."""
    rank = dict.fromkeys(sorted(ids), 0)
    for _ in range(len(rank)):
        changed = False
        for src, dst in sorted(pairs):
            if src != dst and rank[dst] < rank[src] + 1 and rank[src] + 1 < len(rank):
                rank[dst] = rank[src] + 1
                changed = True
        if not changed:
            break
    return rank


def _ports(keys: Iterable[graph.FlowKey]) -> str:
    by_protocol: dict[str, set[int]] = {}
    bare: set[str] = set()
    for key in keys:
        if key.port is None:
            bare.add(key.protocol)
        else:
            by_protocol.setdefault(key.protocol, set()).add(key.port)
    parts = [
        f"{p} {', '.join(str(n) for n in sorted(by_protocol[p]))}" for p in sorted(by_protocol)
    ]
    return " · ".join(parts + sorted(bare - set(by_protocol)))


def _bezier(points: tuple[tuple[float, float], ...], t: float) -> tuple[float, float]:
    u = 1 - t
    weights = (u * u * u, 3 * u * u * t, 3 * u * t * t, t * t * t)
    x = sum(w * p[0] for w, p in zip(weights, points, strict=True))
    y = sum(w * p[1] for w, p in zip(weights, points, strict=True))
    return (x, y)


def _curve(
    a: Node, b: Node, ay: float, by: float
) -> tuple[tuple[tuple[float, float], ...], tuple[float, float]]:
    """A curve from `a` (leaving at height `ay`) to `b` (arriving at `by`), and where its
    label goes: two thirds of the way, where curves leaving one node have spread apart."""
    if b.x > a.x + a.w / 2:  # rightwards
        start, end = (a.x + a.w, ay), (b.x, by)
        bend = max((end[0] - start[0]) / 2, 40)
        c1, c2 = (start[0] + bend, ay), (end[0] - bend, by)
    elif b.x + b.w / 2 < a.x:  # leftwards
        start, end = (a.x, ay), (b.x + b.w, by)
        bend = max((start[0] - end[0]) / 2, 40)
        c1, c2 = (start[0] - bend, ay), (end[0] + bend, by)
    else:  # same column: a loop out to the right
        start, end = (a.x + a.w, ay), (b.x + b.w, by)
        reach = 50 + abs(by - ay) / 4
        c1, c2 = (start[0] + reach, ay), (end[0] + reach, by)
    points = (start, c1, c2, end)
    return points, _bezier(points, 0.62)


def layout(graph_doc: graph.FlowGraph, namespace: str | None = None) -> Layout:
    """The map of `graph_doc` (or of the part touching `namespace`)."""
    flows = selected_flows(graph_doc, namespace)
    kinds = {f"{w.namespace}/{w.name}": w.kind for w in graph_doc.workloads}
    members: dict[str, graph.Endpoint] = {}
    for w in graph_doc.workloads:
        if namespace is None or w.namespace == namespace:
            members[f"{w.namespace}/{w.name}"] = graph.Endpoint(w.namespace, w.name)
    for f in flows:
        for end in (f.key.src, f.key.dst):
            members[node_id(end)] = end
    pairs = {(node_id(f.key.src), node_id(f.key.dst)) for f in flows}
    internal = {(a, b) for a, b in pairs if not members[a].external and not members[b].external}
    rank = _ranks(members, internal)
    return _place(members, kinds, rank, pairs, flows)


def _place(
    members: dict[str, graph.Endpoint],
    kinds: dict[str, str],
    rank: dict[str, int],
    pairs: set[tuple[str, str]],
    flows: list[graph.Flow],
) -> Layout:
    """Workloads in columns by rank, one row each, namespaces as bands of rows (so no edge
    runs along a row through another node); external sources in a column on the left,
    external destinations in one on the right, each level with what it talks to."""
    receivers = {dst for _, dst in pairs}
    inside = {i: e for i, e in members.items() if not e.external}
    sources = sorted(i for i, e in members.items() if e.external and i not in receivers)
    sinks = sorted(i for i, e in members.items() if e.external and i in receivers)
    shift = 1 if sources else 0
    last = max([rank[i] for i in inside] + [-1]) + 1 + shift
    bands: dict[str, list[str]] = {}
    for ident, end in inside.items():
        bands.setdefault(end.namespace, []).append(ident)

    def x_of(column: int) -> float:
        return PAD + 2 * PAD + column * (NODE_W + COLUMN_GAP)

    nodes: dict[str, Node] = {}
    boxes: list[Box] = []
    y = float(TOP)
    for name in sorted(bands, key=lambda n: (sum(rank[i] for i in bands[n]) / len(bands[n]), n)):
        top = y
        y += TITLE + PAD
        ids = sorted(bands[name], key=lambda i: (rank[i], i))
        for ident in ids:
            detail = kinds.get(ident, "workload")
            x = x_of(rank[ident] + shift)
            nodes[ident] = Node(ident, inside[ident].workload, detail, x, y)
            y += NODE_H + GAP_Y
        left = min(nodes[i].x for i in ids) - PAD
        right = max(nodes[i].x + NODE_W for i in ids) + PAD
        boxes.append(Box(name, left, top, right - left, y - GAP_Y + PAD - top))
        y += PAD + GAP_Y
    bottom = y
    for ids, x in ((sources, x_of(0) - 2 * PAD), (sinks, x_of(last))):
        bottom = max(bottom, _externals(ids, x, nodes, pairs))
    width = x_of(last) + NODE_W + 2 * PAD
    return Layout(
        max(width, 420.0),
        bottom,
        tuple(boxes),
        tuple(nodes[i] for i in sorted(nodes)),
        _edges(nodes, flows),
    )


def _externals(
    ids: list[str], x: float, nodes: dict[str, Node], pairs: set[tuple[str, str]]
) -> float:
    """Place external networks in one column, each as level as it can be with the workloads
    it talks to (placed already); returns the bottom of the column."""
    wanted = {}
    for ident in ids:
        peers = [nodes[b if a == ident else a] for a, b in pairs if ident in (a, b)]
        peers = [p for p in peers if p.id in nodes and not p.external] or list(nodes.values())
        mean = sum(p.y for p in peers) / len(peers) if peers else float(TOP)
        wanted[ident] = mean
    y = float(TOP)
    for ident in sorted(ids, key=lambda i: (wanted[i], i)):
        y = max(y, wanted[ident])
        nodes[ident] = Node(ident, ident, "external", x, y)
        y += NODE_H + GAP_Y
    return y


def _spread(node: Node, n: int, i: int) -> float:
    """The height of the i-th of n edge ends on one side of `node` (evenly spread)."""
    return node.y + node.h * (i + 1) / (n + 1)


def _edges(nodes: dict[str, Node], flows: list[graph.Flow]) -> tuple[Edge, ...]:
    grouped: dict[tuple[str, str, str], list[graph.FlowKey]] = {}
    counts: dict[tuple[str, str, str], int] = {}
    for f in flows:
        k = f.key
        g = (node_id(k.src), node_id(k.dst), k.verdict)
        grouped.setdefault(g, []).append(k)
        counts[g] = counts.get(g, 0) + f.count
    ordered = sorted(grouped, key=lambda g: (g[0], g[1], VERDICT_ORDER[g[2]]))
    # Each node's outgoing ends ordered by where they go, incoming by where they come from,
    # so that curves leaving or entering one node do not cross there.
    outs: dict[str, list[tuple[str, str, str]]] = {}
    ins: dict[str, list[tuple[str, str, str]]] = {}
    for g in ordered:
        outs.setdefault(g[0], []).append(g)
        ins.setdefault(g[1], []).append(g)

    def by_far_end(far: int) -> Callable[[tuple[str, str, str]], tuple[float, str, int]]:
        return lambda g: (nodes[g[far]].y, g[far], VERDICT_ORDER[g[2]])

    for group in outs.values():
        group.sort(key=by_far_end(1))
    for group in ins.values():
        group.sort(key=by_far_end(0))
    edges = []
    for g in ordered:
        src, dst, verdict = g
        ay = _spread(nodes[src], len(outs[src]), outs[src].index(g))
        by = _spread(nodes[dst], len(ins[dst]), ins[dst].index(g))
        points, label_at = _curve(nodes[src], nodes[dst], ay, by)
        edges.append(Edge(src, dst, verdict, _ports(grouped[g]), points, label_at, counts[g]))
    return tuple(edges)
