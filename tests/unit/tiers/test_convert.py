"""Conversion of ClusterNetworkPolicy (v1alpha2) and AdminNetworkPolicy /
BaselineAdminNetworkPolicy (v1alpha1) objects, as the API server returns them."""

from __future__ import annotations

from typing import Any

from agent import model
from agent.tiers import convert
from agent.tiers import model as tiers


def cnp(spec: dict[str, Any], name: str = "p") -> dict[str, Any]:
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name, "resourceVersion": "7"},
        "spec": spec,
    }


def test_admin_cnp_with_every_peer_and_port_kind() -> None:
    policy = convert.cluster_network_policy(
        cnp(
            {
                "tier": "Admin",
                "priority": 10,
                "subject": {"namespaces": {"matchLabels": {"team": "shop"}}},
                "ingress": [
                    {
                        "name": "deny-ssh",
                        "action": "Deny",
                        "from": [{"namespaces": {}}],
                        "protocols": [{"tcp": {"destinationPort": {"number": 22}}}],
                    },
                    {
                        "name": "monitoring",
                        "action": "Accept",
                        "from": [
                            {
                                "pods": {
                                    "namespaceSelector": {"matchLabels": {"k": "mon"}},
                                    "podSelector": {"matchLabels": {"app": "prom"}},
                                }
                            }
                        ],
                        "protocols": [
                            {"destinationNamedPort": "metrics"},
                            {"udp": {"destinationPort": {"range": {"start": 5000, "end": 5010}}}},
                            {"sctp": {}},
                        ],
                    },
                ],
                "egress": [
                    {"name": "out", "action": "Pass", "to": [{"networks": ["10.1.2.3/8"]}]},
                    {"name": "nodes", "action": "Deny", "to": [{"nodes": {}}]},
                ],
            }
        )
    )
    assert policy.errors == ()
    assert (policy.kind, policy.tier, policy.priority, policy.key) == (
        "ClusterNetworkPolicy",
        "Admin",
        10,
        "ClusterNetworkPolicy/p",
    )
    assert policy.subject.namespaces == model.LabelSelector(match_labels=(("team", "shop"),))
    deny, accept = policy.ingress
    assert (deny.name, deny.action) == ("deny-ssh", "Deny")
    assert deny.ports == (tiers.Port("TCP", 22, 22),)
    assert accept.peers[0].pods is not None
    assert accept.ports == (
        tiers.Port(protocol="", named="metrics"),
        tiers.Port("UDP", 5000, 5010),
        tiers.Port("SCTP"),
    )
    assert policy.egress[0].peers == (tiers.Peer(networks=("10.0.0.0/8",)),)
    assert policy.egress[1].peers == (tiers.Peer(nodes=model.LabelSelector()),)


def test_invalid_parts_match_nothing_and_are_named() -> None:
    policy = convert.cluster_network_policy(
        cnp(
            {
                "tier": "Admin",
                "priority": 1,
                "subject": {"pods": {"namespaceSelector": {}, "podSelector": {}}},
                "ingress": [{"action": "Explode", "from": [{"namespaces": {}}]}],
                "egress": [
                    {"action": "Accept", "to": [{"networks": ["not-a-cidr"]}]},
                    {"action": "Accept", "to": [{"domainNames": ["*.example.com"]}]},
                    {"action": "Deny", "to": [{"futureField": {}}]},
                    {
                        "action": "Accept",
                        "to": [{"namespaces": {}}],
                        "protocols": [
                            {"tcp": {"destinationPort": {"range": {"start": 9, "end": 2}}}}
                        ],
                    },
                ],
            }
        )
    )
    assert policy.ingress[0].action == ""
    assert policy.egress[0].peers == (tiers.Peer(invalid=True),)
    assert policy.egress[1].peers == (tiers.Peer(invalid=True),)
    assert policy.egress[2].peers == (tiers.Peer(unknown=True),)
    assert policy.egress[3].ports[0].invalid
    text = " | ".join(policy.errors)
    for part in (
        "unknown action 'Explode'",
        "invalid CIDR",
        "domainNames",
        "no known peer",
        "range",
    ):
        assert part in text


def test_bad_tier_or_priority_selects_no_pod() -> None:
    for spec in (
        {"tier": "Middle", "priority": 1, "subject": {"namespaces": {}}},
        {"tier": "Admin", "priority": 1001, "subject": {"namespaces": {}}},
        {"tier": "Admin", "priority": 3, "subject": {}},
    ):
        policy = convert.cluster_network_policy(cnp(spec))
        assert policy.subject == tiers.Subject(), spec
        assert policy.errors, spec


def test_v1alpha1_admin_and_baseline() -> None:
    anp = convert.admin_network_policy(
        {
            "metadata": {"name": "guard"},
            "spec": {
                "priority": 5,
                "subject": {"namespaces": {}},
                "ingress": [
                    {
                        "name": "mon",
                        "action": "Allow",
                        "from": [
                            {"namespaces": {"namespaceSelector": {"matchLabels": {"a": "b"}}}}
                        ],
                        "ports": [
                            {"portNumber": {"protocol": "TCP", "port": 80}},
                            {"namedPort": "http"},
                            {"portRange": {"protocol": "UDP", "start": 53, "end": 54}},
                        ],
                    },
                    {
                        "action": "Pass",
                        "from": [
                            {
                                "pods": {
                                    "namespaces": {"namespaceSelector": {}},
                                    "podSelector": {"matchLabels": {"x": "y"}},
                                }
                            }
                        ],
                    },
                    {"action": "Deny", "from": [{"namespaces": {"sameLabels": ["tenant"]}}]},
                ],
            },
        }
    )
    assert (anp.tier, anp.priority, anp.key) == ("Admin", 5, "AdminNetworkPolicy/guard")
    mon, passing, same = anp.ingress
    assert mon.action == "Accept"
    assert mon.peers == (tiers.Peer(namespaces=model.LabelSelector(match_labels=(("a", "b"),))),)
    assert mon.ports == (
        tiers.Port("TCP", 80, 80),
        tiers.Port(protocol="", named="http"),
        tiers.Port("UDP", 53, 54),
    )
    assert passing.action == "Pass" and passing.peers[0].pods is not None
    assert same.peers == (tiers.Peer(invalid=True),)
    assert any("sameLabels" in e for e in anp.errors)

    banp = convert.baseline_admin_network_policy(
        {
            "metadata": {"name": "default"},
            "spec": {
                "subject": {"namespaces": {}},
                "ingress": [
                    {"action": "Pass", "from": [{"namespaces": {"namespaceSelector": {}}}]}
                ],
            },
        }
    )
    assert (banp.tier, banp.priority) == ("Baseline", tiers.BANP_PRIORITY)
    assert banp.ingress[0].action == ""  # Pass does not exist in the baseline API


def test_priority_conflicts_are_reported_for_each_policy() -> None:
    spec = {"tier": "Admin", "priority": 4, "subject": {"namespaces": {}}}
    a = convert.cluster_network_policy(cnp(spec, "a"))
    b = convert.cluster_network_policy(cnp(spec, "b"))
    c = convert.cluster_network_policy(cnp({**spec, "priority": 5}, "c"))
    conflicts = convert.priority_conflicts([a, b, c])
    assert set(conflicts) == {"ClusterNetworkPolicy/a", "ClusterNetworkPolicy/b"}
    assert "ClusterNetworkPolicy/b" in conflicts["ClusterNetworkPolicy/a"]
