"""The flow graph document: what `podseg flows` writes is what the other tools read back."""

from __future__ import annotations

import datetime

import pytest

from agent.flows import graph

T0 = datetime.datetime(2026, 12, 6, 10, 0, tzinfo=datetime.UTC)


def _flow(count: int, first: int, last: int, node: str) -> graph.Flow:
    key = graph.FlowKey(
        src=graph.Endpoint("shop", "web"),
        dst=graph.Endpoint(external="203.0.113.0/24"),
        protocol="TCP",
        port=443,
        verdict="allowed",
    )
    return graph.Flow(
        key,
        count,
        T0 + datetime.timedelta(seconds=first),
        T0 + datetime.timedelta(seconds=last),
        (node,),
    )


def test_round_trip() -> None:
    doc = graph.FlowGraph(
        generated=T0,
        since=None,
        until=T0,
        namespaces={"shop": {"kubernetes.io/metadata.name": "shop"}},
        workloads=(
            graph.Workload(
                "shop", "web", "Deployment", {"app": "web"}, (graph.NamedPort("http", 8080),)
            ),
        ),
        policies=({"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": "shop"}},),
        flows=(_flow(3, 0, 5, "n1"),),
    )
    assert graph.loads(graph.dumps(doc)) == doc


def test_merge_sums_and_widens() -> None:
    (merged,) = graph.merge_flows([_flow(3, 10, 20, "n2"), _flow(4, 5, 15, "n1")])
    assert merged.count == 7
    assert merged.first_seen == T0 + datetime.timedelta(seconds=5)
    assert merged.last_seen == T0 + datetime.timedelta(seconds=20)
    assert merged.nodes == ("n1", "n2")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[1, 2]", "not a podseg flow graph"),
        ("{oops", "not JSON"),
        ('{"kind": "NetworkPolicy"}', "not a podseg flow graph"),
        ('{"kind": "FlowGraph", "apiVersion": "podseg.io/v9"}', "unsupported"),
        (
            '{"kind": "FlowGraph", "apiVersion": "podseg.io/v1",'
            ' "generated": "2026-12-06T10:00:00Z", "window": {"until": "2026-12-06T10:00:00Z"},'
            ' "flows": [{"verdict": "maybe"}]}',
            "flows[0].verdict",
        ),
    ],
)
def test_bad_documents_say_what(text: str, words: str) -> None:
    with pytest.raises(graph.GraphError, match=words.replace("[", r"\[").replace("]", r"\]")):
        graph.loads(text)


def test_flows_differing_only_by_a_missing_port_sort_and_merge() -> None:
    def flow(port: int | None, protocol: str = "TCP") -> graph.Flow:
        key = graph.FlowKey(
            graph.Endpoint("shop", "web"), graph.Endpoint("shop", "db"), protocol, port, "dropped"
        )
        return graph.Flow(key, 1, T0, T0)

    flows = [flow(5432), flow(None), flow(80), flow(None)]
    merged = graph.merge_flows(flows)
    assert [(f.key.port, f.count) for f in merged] == [(None, 2), (80, 1), (5432, 1)]
    doc = graph.FlowGraph(T0, None, T0, {}, (), (), tuple(flows[:3]))
    assert [f["port"] for f in graph.to_json(doc)["flows"]] == [None, 80, 5432]
    assert graph.loads(graph.dumps(doc)).flows == tuple(
        sorted(doc.flows, key=lambda f: graph.sort_key(f.key))
    )


def test_flow_from_json_reads_one_flow_and_names_what_is_wrong() -> None:
    raw = graph.to_json(graph.FlowGraph(T0, None, T0, {}, (), (), (_flow(2, 0, 1, "n1"),)))
    assert graph.flow_from_json(raw["flows"][0]) == _flow(2, 0, 1, "n1")
    with pytest.raises(graph.GraphError, match=r"flow\.count"):
        graph.flow_from_json({**raw["flows"][0], "count": "x"})
