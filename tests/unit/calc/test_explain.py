"""`calc.explain`: the rule-by-rule reasons agree with the compiled ruleset (the kernel's
verdict) for every pair of endpoints of random clusters, and name the deciding part."""

from __future__ import annotations

import dataclasses
import random

import pytest

from agent import model
from agent.calc import containment, ruleset
from agent.calc import desired as calc_desired
from agent.calc import explain as calc_explain
from agent.calc import mode as calc_mode
from agent.k8s import convert
from tests.support import randomcluster

OUTSIDE = ("198.18.0.1", "198.18.128.1", "169.254.169.254", "203.0.113.9", "198.18.1.3")


def _cluster(rnd: random.Random) -> tuple[calc_desired.Cluster, list[model.Pod]]:
    namespaces = {f"ns{i}": randomcluster.namespace(rnd, i) for i in range(3)}
    pods = [randomcluster.pod(rnd, i) for i in range(10)]
    for i, pod in enumerate(pods):
        if rnd.random() < 0.15:
            sources = rnd.choice(("198.18.1.0/28", "198.18.0.0/16", ""))
            pods[i] = dataclasses.replace(
                pod,
                labels={**pod.labels, containment.QUARANTINE_LABEL: "true"},
                annotations={containment.ALLOW_FROM_ANNOTATION: sources},
            )
        elif rnd.random() < 0.1:
            pods[i] = dataclasses.replace(
                pod, labels={**pod.labels, calc_mode.LABEL: rnd.choice(("enforce", "x"))}
            )
    policies = [randomcluster.policy(rnd, i) for i in range(5)]
    cluster = calc_desired.Cluster.of(
        pods=pods,
        namespaces=namespaces,
        policies=policies,
        nodes=randomcluster.NODES,
        guard_ports=randomcluster.GUARD_PORTS,
    )
    return cluster, pods


def _endpoints(pods: list[model.Pod]) -> list[calc_explain.Endpoint]:
    out = [calc_explain.Endpoint(p.ips[0], p) for p in pods if p.ips and not p.host_network]
    return out + [calc_explain.Endpoint(a) for a in OUTSIDE]


def test_the_reasons_agree_with_the_compiled_verdict_on_random_clusters() -> None:
    rnd = random.Random(7)
    sides = blocked = 0
    for _ in range(60):
        cluster, pods = _cluster(rnd)
        endpoints = _endpoints(pods)
        for src in endpoints:
            for dst in endpoints:
                if src is dst:
                    continue
                for protocol, port in (("TCP", 80), ("TCP", 8080), ("TCP", 22), ("UDP", 80)):
                    found = calc_explain.explain(src, dst, protocol, port, cluster)
                    for side in found.sides:
                        sides += 1
                        blocked += side.verdict != calc_explain.ALLOWED
                        assert side.agrees, (src, dst, protocol, port, side)
                        assert side.reasons
    assert sides > 10_000 and 0.1 < blocked / sides < 0.9  # both outcomes well exercised


def _spec_cluster(*objects: dict[str, object]) -> tuple[calc_desired.Cluster, dict[str, model.Pod]]:
    pods = {
        "web": model.Pod(
            "shop",
            "web",
            labels={"app": "web"},
            node_name="node-1",
            ips=("198.18.1.1",),
            phase="Running",
            container_ports=(model.ContainerPort(8080, "TCP", "http"),),
        ),
        "api": model.Pod(
            "shop",
            "api",
            labels={"app": "api"},
            node_name="node-1",
            ips=("198.18.1.2",),
            phase="Running",
        ),
    }
    policies = [convert.network_policy(o) for o in objects]
    cluster = calc_desired.Cluster.of(
        pods=pods.values(),
        namespaces={"shop": model.Namespace("shop")},
        policies=policies,
        nodes=(model.Node("node-1", ("198.18.0.1",)),),
        guard_ports=randomcluster.GUARD_PORTS,
    )
    return cluster, pods


def test_the_allowing_rule_is_named_with_policy_rule_peer_and_port() -> None:
    cluster, pods = _spec_cluster(
        {
            "metadata": {"namespace": "shop", "name": "web-in"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [
                    {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},
                    {
                        "from": [{"podSelector": {"matchLabels": {"app": "api"}}}],
                        "ports": [{"port": "http"}],
                    },
                ],
            },
        }
    )
    api, web = (calc_explain.Endpoint(p.ips[0], p) for p in (pods["api"], pods["web"]))
    allowed = calc_explain.explain(api, web, "tcp", 8080, cluster)
    assert allowed.verdict == calc_explain.ALLOWED
    (ingress,) = [s for s in allowed.sides if s.direction == "ingress"]
    assert ingress.isolating == ("shop/web-in",)
    assert ingress.allowed_by == (
        calc_explain.Match("shop/web-in", 1, "0 (podSelector)", "TCP/http (8080)"),
    )
    denied = calc_explain.explain(api, web, "tcp", 9090, cluster)
    assert denied.verdict == calc_explain.DENIED
    assert "isolated by shop/web-in; no rule allows shop/api" in denied.sides[1].reasons


@pytest.mark.parametrize(
    ("destination", "port", "reason"),
    [
        ("198.18.0.1", 10250, "node guard: 198.18.0.1 is a node address"),
        ("169.254.169.254", 80, "node guard: 169.254.169.254 is a cloud metadata address"),
    ],
)
def test_the_node_guard_is_named(destination: str, port: int, reason: str) -> None:
    cluster, pods = _spec_cluster()
    found = calc_explain.explain(
        calc_explain.Endpoint("198.18.1.2", pods["api"]),
        calc_explain.Endpoint(destination),
        "tcp",
        port,
        cluster,
    )
    assert found.verdict == calc_explain.DENIED
    assert found.sides[0].reasons[0].startswith(reason)


def test_quarantine_and_visibility_are_named() -> None:
    cluster, pods = _spec_cluster(
        {"metadata": {"namespace": "shop", "name": "deny"}, "spec": {"podSelector": {}}}
    )
    web = pods["web"]
    caught = dataclasses.replace(web, labels={**web.labels, containment.QUARANTINE_LABEL: "true"})
    q = calc_explain.explain(
        calc_explain.Endpoint("198.18.1.1", caught),
        calc_explain.Endpoint("198.18.1.2", pods["api"]),
        "tcp",
        80,
        cluster,
    )
    assert q.verdict == calc_explain.DENIED and "quarantined" in q.sides[0].reasons[0]
    audited = dataclasses.replace(
        cluster, namespaces={"shop": model.Namespace("shop", {calc_mode.LABEL: "visibility"})}
    )
    v = calc_explain.explain(
        calc_explain.Endpoint("198.18.1.2", pods["api"]),
        calc_explain.Endpoint("198.18.1.1", pods["web"]),
        "tcp",
        80,
        audited,
    )
    assert v.verdict == calc_explain.WOULD_DROP
    assert any("visibility mode" in r for r in v.sides[-1].reasons)
    assert ruleset.PolicyMode.VISIBILITY
