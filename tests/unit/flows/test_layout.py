"""The map's layout: deterministic whatever the input order, every endpoint a node, nodes
inside their namespace's box and never on top of each other, one edge per (source,
destination, verdict) with its ports, and the namespace filter."""

from __future__ import annotations

import dataclasses
import itertools
import random

from agent.flows import layout
from tests.support import flowgraphs as fg


def test_same_graph_same_picture_whatever_the_order() -> None:
    doc = fg.shop()
    first = layout.layout(doc)
    rng = random.Random(7)
    for _ in range(5):
        flows, workloads = list(doc.flows), list(doc.workloads)
        rng.shuffle(flows)
        rng.shuffle(workloads)
        shuffled = dataclasses.replace(doc, flows=tuple(flows), workloads=tuple(workloads))
        assert layout.layout(shuffled) == first


def test_every_endpoint_is_a_node_inside_its_box_and_none_overlap() -> None:
    doc = fg.shop()
    lay = layout.layout(doc)
    ids = {n.id for n in lay.nodes}
    for f in doc.flows:
        assert {layout.node_id(f.key.src), layout.node_id(f.key.dst)} <= ids
    assert ids >= {f"{w.namespace}/{w.name}" for w in doc.workloads}
    boxes = {b.namespace: b for b in lay.boxes}
    assert sorted(boxes) == ["kube-system", "monitoring", "shop"]
    for node in lay.nodes:
        assert node.x >= 0 and node.x + node.w <= lay.width
        assert node.y >= 0 and node.y + node.h <= lay.height
        if node.external:
            assert not any(_inside(node, b) for b in lay.boxes)
        else:
            assert _inside(node, boxes[node.id.split("/")[0]])
    for a, b in itertools.combinations(lay.nodes, 2):
        apart_x = a.x + a.w <= b.x or b.x + b.w <= a.x
        apart_y = a.y + a.h <= b.y or b.y + b.h <= a.y
        assert apart_x or apart_y, (a.id, b.id)
    rows = [n.y for n in lay.nodes if not n.external]
    assert len(set(rows)) == len(rows)  # a row of its own: no edge runs along a row
    for a, b in itertools.combinations(lay.boxes, 2):
        assert a.y + a.h <= b.y or b.y + b.h <= a.y


def _inside(node: layout.Node, box: layout.Box) -> bool:
    return (
        box.x <= node.x
        and node.x + node.w <= box.x + box.w
        and box.y <= node.y
        and node.y + node.h <= box.y + box.h
    )


def test_edges_carry_verdict_and_ports_and_end_on_their_nodes() -> None:
    doc = fg.make(
        [fg.workload("x", "a"), fg.workload("x", "b"), fg.workload("y", "c")],
        [
            fg.flow("x/a", "x/b", 80),
            fg.flow("x/a", "x/b", 443),
            fg.flow("x/a", "x/b", 53, proto="UDP"),
            fg.flow("x/a", "x/b", 22, verdict="dropped"),
            fg.flow("y/c", "x/a", 9090, verdict="would-drop"),
        ],
    )
    lay = layout.layout(doc)
    edges = {(e.src, e.dst, e.verdict): e for e in lay.edges}
    assert sorted(edges) == [
        ("x/a", "x/b", "allowed"),
        ("x/a", "x/b", "dropped"),
        ("y/c", "x/a", "would-drop"),
    ]
    assert edges[("x/a", "x/b", "allowed")].label == "TCP 80, 443 · UDP 53"
    assert edges[("x/a", "x/b", "dropped")].label == "TCP 22"
    nodes = {n.id: n for n in lay.nodes}
    for edge in lay.edges:
        (sx, sy), *_, (ex, ey) = edge.points
        src, dst = nodes[edge.src], nodes[edge.dst]
        assert sx in (src.x, src.x + src.w) and src.y <= sy <= src.y + src.h
        assert ex in (dst.x, dst.x + dst.w) and dst.y <= ey <= dst.y + dst.h
    a, b = edges[("x/a", "x/b", "allowed")], edges[("x/a", "x/b", "dropped")]
    assert a.points != b.points  # two verdicts between one pair: two distinct curves


def test_namespace_filter_keeps_its_workloads_and_their_peers() -> None:
    doc = fg.shop()
    lay = layout.layout(doc, "monitoring")
    assert {n.id for n in lay.nodes} == {
        "monitoring/prometheus",
        "shop/frontend",
        "shop/cart",
        "shop/catalog",
        "kube-system/coredns",
    }
    assert all("monitoring" in (e.src.split("/")[0], e.dst.split("/")[0]) for e in lay.edges)
    assert len(lay.edges) == 4


def test_traffic_flows_left_to_right() -> None:
    lay = layout.layout(fg.shop())
    x = {n.id: n.x for n in lay.nodes}
    assert x["192.0.2.0/24"] < x["shop/frontend"] < x["shop/cart"] < x["shop/db"]
    assert x["203.0.113.0/24"] == max(x.values())
