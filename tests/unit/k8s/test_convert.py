"""API objects -> model, with invalid parts turned into match-nothing entries."""

from __future__ import annotations

from typing import Any

from agent import model
from agent.k8s import convert


def _policy(spec: dict[str, Any]) -> model.NetworkPolicy:
    return convert.network_policy({"metadata": {"name": "p", "namespace": "x"}, "spec": spec})


def test_policy_types_default_to_ingress_plus_egress_when_egress_rules_exist() -> None:
    assert _policy({"podSelector": {}}).policy_types == ("Ingress",)
    assert _policy({"podSelector": {}, "egress": []}).policy_types == ("Egress", "Ingress")
    assert _policy({"podSelector": {}, "policyTypes": ["Egress"]}).policy_types == ("Egress",)


def test_invalid_parts_match_nothing_and_are_reported() -> None:
    policy = _policy(
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {"ipBlock": {"cidr": "10.0.0.0/33"}},
                        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}},
                        {"podSelector": {"matchLabels": {"app": "ok"}}},
                    ],
                    "ports": [{"port": 0}, {"protocol": "ICMP"}, {"port": 80, "endPort": 79}],
                }
            ],
        }
    )
    rule = policy.ingress[0]
    assert [p.invalid for p in rule.peers] == [True, True, False]
    assert all(p.invalid for p in rule.ports)
    assert len(policy.errors) == 5
    assert policy.errors[0].startswith("ingress[0].from[0]: invalid ipBlock")


def test_except_outside_cidr_and_mixed_peer_are_invalid() -> None:
    policy = _policy(
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}},
                        {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}},
                        {},
                    ]
                }
            ],
        }
    )
    assert [p.invalid for p in policy.ingress[0].peers] == [True, True, True]


def test_malformed_pod_selector_selects_no_pod() -> None:
    policy = _policy({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}})
    assert policy.pod_selector is None
    assert "selects no pod" in policy.errors[0]


def test_pod_ips_ports_and_flags() -> None:
    pod = convert.pod(
        {
            "metadata": {"name": "a", "namespace": "x", "labels": {"app": "web"}},
            "spec": {
                "nodeName": "node-1",
                "containers": [
                    {"name": "c", "ports": [{"containerPort": 8080, "name": "http"}]},
                ],
            },
            "status": {
                "podIP": "198.18.1.2",
                "podIPs": [{"ip": "198.18.1.2"}, {"ip": "fd00:198:18:0::1:2"}, {"ip": "bad"}],
            },
        }
    )
    assert pod.ips == ("198.18.1.2", "fd00:198:18::1:2")
    assert pod.container_ports == (model.ContainerPort(8080, "TCP", "http"),)
    assert pod.node_name == "node-1" and not pod.host_network
    assert pod.labels == {"app": "web"}
