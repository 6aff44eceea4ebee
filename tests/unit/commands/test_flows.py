"""`podseg flows` gathering without a cluster: fake agents answer like agent.localapi, a
listed cluster gives the workloads, namespaces and policies; flows of several nodes merge,
an unreachable agent is a warning, an unknown namespace an error."""

from __future__ import annotations

import argparse
import datetime
import io
from collections.abc import Mapping
from typing import Any

import pytest

from agent.commands import agents, flows
from agent.flows import edges, flowstore, graph

NOW = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)


def pod(
    ns: str,
    name: str,
    labels: dict[str, str],
    owner: tuple[str, str] | None = None,
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": ns, "name": name, "labels": labels}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    return {
        "metadata": meta,
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": ports or []}]},
        "status": {"podIPs": [{"ip": "198.18.0.9"}]},
    }


CLUSTER = flows.Cluster(
    pods=(
        pod(
            "shop",
            "web-5d8f-a",
            {"app": "web", "pod-template-hash": "5d8f", "n": "1"},
            ("ReplicaSet", "web-5d8f"),
            [{"name": "http", "containerPort": 8080}],
        ),
        pod(
            "shop",
            "web-5d8f-b",
            {"app": "web", "pod-template-hash": "5d8f", "n": "2"},
            ("ReplicaSet", "web-5d8f"),
            [{"name": "http", "containerPort": 8080}],
        ),
        pod(
            "shop",
            "db-0",
            {"app": "db"},
            ("StatefulSet", "db"),
            [{"name": "pg", "containerPort": 5432}],
        ),
        pod("tools", "debug", {"run": "debug"}),
        pod("other", "x", {"a": "b"}),
    ),
    namespaces=tuple(
        {"metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n}}}
        for n in ("shop", "tools", "other")
    ),
    policies=(
        {
            "metadata": {"namespace": "shop", "name": "db", "managedFields": [{}]},
            "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"]},
        },
        {"metadata": {"namespace": "other", "name": "o"}, "spec": {"podSelector": {}}},
    ),
)


def stored(
    src: tuple[str, str, str],
    dst: tuple[str, str, str],
    port: int,
    verdict: str,
    count: int,
    first: float,
    last: float,
) -> dict[str, Any]:
    key = edges.EdgeKey(*src, *dst, "TCP", port, verdict)
    return flowstore.flow_json(key, count, first, last)


T = NOW.timestamp()
WEB, DB, DEBUG = ("shop", "web", ""), ("shop", "db", ""), ("tools", "debug", "")


class FakeAgent:
    def __init__(self, node: str, answer: dict[str, Any] | None) -> None:
        self.node, self.answer = node, answer
        self.queries: list[Mapping[str, str]] = []

    def flows(self, query: Mapping[str, str]) -> dict[str, Any]:
        self.queries.append(dict(query))
        if self.answer is None:
            raise agents.AgentUnreachable(f"agent of node {self.node}: connection refused")
        return self.answer


def test_gather_merges_nodes_describes_workloads_and_warns_about_the_unreachable() -> None:
    n1 = FakeAgent(
        "n1",
        {
            "node": "n1",
            "flows": [
                stored(WEB, DB, 5432, "allowed", 3, T - 600, T - 60),
                stored(DEBUG, DB, 5432, "dropped", 2, T - 500, T - 400),
            ],
        },
    )
    n2 = FakeAgent(
        "n2",
        {
            "node": "n2",
            "flows": [
                stored(WEB, DB, 5432, "allowed", 4, T - 900, T - 30),
                stored(WEB, ("", "", "203.0.113.0/24"), 443, "allowed", 1, T - 10, T - 10),
            ],
        },
    )
    n3 = FakeAgent("n3", None)
    warnings: list[str] = []
    found = flows.gather(
        None,
        cluster=CLUSTER,
        sources={"n1": n1, "n2": n2, "n3": n3},
        since=3600,
        verdict=None,
        warn=warnings.append,
        now=NOW,
    )
    assert warnings == ["warning: agent of node n3: connection refused; its flows are missing"]
    assert n1.queries == [{"since": "3600s"}]
    by_key = {
        (f.key.src.workload, f.key.dst.workload or f.key.dst.external, f.key.verdict): f
        for f in found.flows
    }
    web_db = by_key[("web", "db", "allowed")]
    assert (web_db.count, web_db.nodes) == (7, ("n1", "n2"))
    assert web_db.first_seen == NOW - datetime.timedelta(seconds=900)
    assert web_db.last_seen == NOW - datetime.timedelta(seconds=30)
    assert by_key[("debug", "db", "dropped")].count == 2
    assert by_key[("web", "203.0.113.0/24", "allowed")].nodes == ("n2",)
    workloads = {(w.namespace, w.name): w for w in found.workloads}
    web = workloads[("shop", "web")]
    assert (web.kind, dict(web.labels)) == ("Deployment", {"app": "web"})
    assert web.ports == (graph.NamedPort("http", 8080),)
    assert workloads[("shop", "db")].kind == "StatefulSet"
    assert workloads[("tools", "debug")].kind == "Pod"
    assert found.since == NOW - datetime.timedelta(hours=1) and found.until == NOW
    assert {p["metadata"]["name"] for p in found.policies} == {"db", "o"}
    assert "managedFields" not in found.policies[0]["metadata"]
    # the document round-trips
    assert graph.loads(graph.dumps(found)) == found


def test_namespace_narrows_and_unknown_namespace_is_an_error() -> None:
    n1 = FakeAgent("n1", {"node": "n1", "flows": [stored(DEBUG, DB, 5432, "dropped", 1, T, T)]})
    found = flows.gather(None, cluster=CLUSTER, sources={"n1": n1}, namespace="tools", now=NOW)
    assert n1.queries == [{"namespace": "tools"}]
    # the other end's namespace is described too, not unrelated ones
    assert set(found.namespaces) == {"tools", "shop"}
    assert {p["metadata"]["name"] for p in found.policies} == {"db"}
    with pytest.raises(flows.GatherError, match="namespace 'nope' not found"):
        flows.gather(None, cluster=CLUSTER, sources={"n1": n1}, namespace="nope")
    week = FakeAgent("n1", {"node": "n1", "flows": []})
    flows.gather(None, cluster=CLUSTER, sources={"n1": week}, since=14 * 86400.0, now=NOW)
    assert week.queries == [{"since": "1209600s"}]  # a whole number of seconds, never 1.2e+06
    with pytest.raises(flows.GatherError, match="verdict"):
        flows.gather(None, cluster=CLUSTER, sources={"n1": n1}, verdict="maybe")


def test_an_agent_without_store_or_with_a_bad_flow_is_a_warning() -> None:
    bad = {**stored(WEB, DB, 80, "allowed", 1, T, T), "verdict": "perhaps"}
    sources = {
        "n1": FakeAgent("n1", {"error": "node n1 keeps no flow store"}),
        "n2": FakeAgent(
            "n2", {"node": "n2", "flows": [bad, stored(WEB, DB, 80, "allowed", 1, T, T)]}
        ),
    }
    warnings: list[str] = []
    found = flows.gather(None, cluster=CLUSTER, sources=sources, warn=warnings.append, now=NOW)
    assert len(found.flows) == 1 and len(warnings) == 2
    assert "keeps no flow store" in warnings[0] and "flows[0].verdict" in warnings[1]


def test_table_output() -> None:
    n1 = FakeAgent("n1", {"node": "n1", "flows": [stored(WEB, DB, 5432, "allowed", 3, T, T)]})
    found = flows.gather(None, cluster=CLUSTER, sources={"n1": n1}, now=NOW)
    out = io.StringIO()
    flows.render(found, out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == [
        "SOURCE",
        "DESTINATION",
        "PROTOCOL",
        "PORT",
        "VERDICT",
        "COUNT",
        "LAST",
        "SEEN",
    ]
    assert lines[1].split() == [
        "shop/web",
        "shop/db",
        "TCP",
        "5432",
        "allowed",
        "3",
        "2026-12-06T12:00:00Z",
    ]


def test_a_bad_since_is_a_gather_error() -> None:
    args = argparse.Namespace(since="soon", agent=[], namespace=None, verdict=None, output="json")
    with pytest.raises(flows.GatherError, match="--since"):
        flows.main(args, None, io.StringIO())  # type: ignore[arg-type]
