"""Randomised: a recommended policy set replayed against the flows it came from changes
nothing (every observed flow still passes), and a connection that was not observed between
the same workloads is dropped (the policies allow exactly what was seen)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.flows import graph, recommend, replay
from tests.support import flowgraphs as fg

PORTS = (80, 443, 5432, 8080, 9090)
EXTERNALS = ("203.0.113.0/24", "192.0.2.0/24", "2001:db8:7::/64")


@st.composite
def graphs(draw: st.DrawFn) -> tuple[graph.FlowGraph, graph.FlowKey]:
    namespaces = draw(st.lists(st.sampled_from("abc"), min_size=1, max_size=3, unique=True))
    workloads = []
    for ns in namespaces:
        for i in range(draw(st.integers(1, 3))):
            named = draw(st.sampled_from([{}, {"web": 8080}, {"pg": 5432}]))
            workloads.append(fg.workload(ns, f"{ns}{i}", **named))
    names = [f"{w.namespace}/{w.name}" for w in workloads]
    ends = names + list(EXTERNALS)
    flows: dict[graph.FlowKey, graph.Flow] = {}
    for _ in range(draw(st.integers(1, 12))):
        src, dst = draw(st.sampled_from(ends)), draw(st.sampled_from(names))
        if draw(st.booleans()):
            src, dst = dst, src
        if src == dst or (src in EXTERNALS and dst in EXTERNALS):
            continue
        proto = draw(st.sampled_from(["TCP", "UDP"]))
        f = fg.flow(src, dst, draw(st.sampled_from(PORTS)), proto=proto)
        flows[f.key] = f
    unseen_src, unseen_dst = draw(st.sampled_from(names)), draw(st.sampled_from(names))
    unseen = graph.FlowKey(fg.end(unseen_src), fg.end(unseen_dst), "TCP", 7000, "allowed")
    return fg.make(workloads, flows.values()), unseen


@settings(max_examples=150, deadline=None)
@given(graphs())
def test_recommended_policies_allow_exactly_what_was_seen(
    case: tuple[graph.FlowGraph, graph.FlowKey],
) -> None:
    doc, unseen = case
    recommended = [
        p for ns in sorted(doc.namespaces) for p in recommend.recommend(doc, ns).policies
    ]
    assert replay.replay(doc, recommended) == ()
    world = replay.world(doc, recommended)
    assert {replay.judge(world, f.key) for f in doc.flows} <= {"allowed"}
    if unseen.src != unseen.dst:
        assert replay.judge(world, unseen) == "dropped"
