"""`podseg recommend`: valid NetworkPolicies (the Kubernetes OpenAPI schema, strict), one per
workload, peers by namespace and pod labels or ipBlock, named ports, DNS, both directions,
and only traffic that passes today."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from agent.flows import graph, recommend, replay
from tests.support import flowgraphs as fg

K8S_VERSION = kubernetes_validate.latest_version()


def _by_name(policies: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in policies}


@pytest.mark.parametrize("namespace", ["shop", "monitoring", "kube-system"])
def test_every_policy_validates_against_the_schema(namespace: str) -> None:
    found = recommend.recommend(fg.shop(), namespace)
    assert found.policies
    for policy in found.policies:
        kubernetes_validate.validate(policy, K8S_VERSION, strict=True)


def test_the_schema_check_would_catch_a_broken_policy() -> None:
    policy = recommend.recommend(fg.shop(), "shop").policies[0]
    broken = dict(policy, spec=dict(policy["spec"], policyTypes="Ingress"))
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_one_policy_per_workload_with_peers_ports_and_dns() -> None:
    policies = _by_name(recommend.recommend(fg.shop(), "shop").policies)
    assert sorted(policies) == [
        "cart-observed",
        "catalog-observed",
        "db-observed",
        "debug-shell-observed",
        "frontend-observed",
    ]
    cart = policies["cart-observed"]["spec"]
    assert cart["policyTypes"] == ["Ingress", "Egress"]
    assert cart["podSelector"] == {"matchLabels": {"app": "cart"}}
    dns = cart["egress"][0]
    assert dns["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    egress_peers = [rule["to"][0] for rule in cart["egress"][1:]]
    assert {"ipBlock": {"cidr": "203.0.113.0/24"}} in egress_peers
    db_rule = next(r for r in cart["egress"][1:] if "podSelector" in r["to"][0])
    # The db's pods declare port 5432 as `postgres`; the podseg.io/mode label is no selector.
    assert db_rule["to"][0]["podSelector"] == {"matchLabels": {"app": "db"}}
    assert db_rule["ports"] == [{"protocol": "TCP", "port": "postgres"}]
    frontend = policies["frontend-observed"]["spec"]
    assert {"ipBlock": {"cidr": "2001:db8:42::/64"}} in [r["to"][0] for r in frontend["egress"]]
    assert {"ipBlock": {"cidr": "192.0.2.0/24"}} in [r["from"][0] for r in frontend["ingress"]]


def test_dropped_traffic_is_left_out_and_would_drop_kept() -> None:
    policies = _by_name(recommend.recommend(fg.shop(), "shop").policies)
    db_sources = [r["from"][0]["podSelector"] for r in policies["db-observed"]["spec"]["ingress"]]
    assert {"matchLabels": {"run": "debug-shell"}} not in db_sources
    assert policies["debug-shell-observed"]["spec"]["egress"] == [recommend._dns_rule()]
    catalog_sources = [r["from"][0] for r in policies["catalog-observed"]["spec"]["ingress"]]
    assert {"ipBlock": {"cidr": "198.51.100.0/24"}} in catalog_sources  # would-drop passes today


def test_the_shop_recommendation_breaks_nothing_observed() -> None:
    doc = fg.shop()
    changes = replay.replay(doc, recommend.recommend(doc, "shop").policies)
    assert not any(c.breaks for c in changes)
    assert {(c.before, c.after) for c in changes} == {("would-drop", "allowed")}


def test_unknown_namespace_and_unselectable_workloads() -> None:
    with pytest.raises(recommend.UnknownNamespace, match=r"no namespace 'nope'.*shop"):
        recommend.recommend(fg.shop(), "nope")
    doc = fg.make([graph.Workload("x", "bare", "Pod", {"pod-template-hash": "5d4f"})], [])
    found = recommend.recommend(doc, "x")
    assert found.policies == ()
    assert "x/bare" in found.notes[0]


def test_icmp_is_noted_not_written() -> None:
    doc = fg.make(
        [fg.workload("x", "a"), fg.workload("x", "b")],
        [fg.flow("x/a", "x/b", None, proto="ICMP"), fg.flow("x/a", "x/b", 80)],
    )
    found = recommend.recommend(doc, "x")
    assert any("ICMP" in note for note in found.notes)
    a = _by_name(found.policies)["a-observed"]["spec"]
    assert a["egress"][1]["ports"] == [{"protocol": "TCP", "port": 80}]


def test_a_peer_without_stable_labels_is_noted() -> None:
    doc = fg.make(
        [fg.workload("x", "a"), graph.Workload("y", "b", "Pod", {})],
        [fg.flow("y/b", "x/a", 80)],
    )
    found = recommend.recommend(doc, "x")
    assert any("peer y/b" in n and "every pod of namespace y" in n for n in found.notes)
    (rule,) = found.policies[0]["spec"]["ingress"]
    assert rule["from"][0]["podSelector"] == {"matchLabels": {}}


def test_traffic_between_pods_of_one_workload_is_allowed_both_ways() -> None:
    doc = fg.make([fg.workload("x", "cache", peer=7000)], [fg.flow("x/cache", "x/cache", 7000)])
    spec = recommend.recommend(doc, "x").policies[0]["spec"]
    own = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "x"}},
        "podSelector": {"matchLabels": {"app": "cache"}},
    }
    assert spec["ingress"] == [{"from": [own], "ports": [{"protocol": "TCP", "port": "peer"}]}]
    assert spec["egress"][1:] == [{"to": [own], "ports": [{"protocol": "TCP", "port": "peer"}]}]
