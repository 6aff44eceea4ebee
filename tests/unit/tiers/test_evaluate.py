"""The tier precedence, evaluated for single connections: Admin (first match, Pass skips the
tier), NetworkPolicy for the pods it isolates, Baseline, default allow."""

from __future__ import annotations

from typing import Any

import pytest

from agent import model
from agent.tiers import convert, evaluate
from agent.tiers import model as tiers

SHOP = {"kubernetes.io/metadata.name": "shop"}
MON = {"kubernetes.io/metadata.name": "monitoring"}
WEB = model.Pod(
    "shop",
    "web-1",
    labels={"app": "web"},
    ips=("198.18.1.2",),
    container_ports=(model.ContainerPort(8080, "TCP", "http"),),
)
API = model.Pod("shop", "api-1", labels={"app": "api"}, ips=("198.18.1.3",))
PROM = model.Pod("monitoring", "prom-0", labels={"app": "prom"}, ips=("198.18.2.2",))


def cnp(name: str, tier: str, priority: int, **spec: Any) -> tiers.ClusterPolicy:
    body = {"tier": tier, "priority": priority, "subject": {"namespaces": {}}, **spec}
    policy = convert.cluster_network_policy({"metadata": {"name": name}, "spec": body})
    assert policy.errors == ()
    return policy


def rule(action: str, peers: list[dict[str, Any]], *ports: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": f"{action.lower()}-rule",
        "action": action,
        "from": peers,
        "protocols": list(ports),
    }


def tcp(port: int) -> dict[str, Any]:
    return {"tcp": {"destinationPort": {"number": port}}}


# The platform team: SSH/RDP/SMB denied everywhere, monitoring always allowed, every other pod
# traffic passed to the namespaces' own NetworkPolicies; a baseline default-deny below them.
PLATFORM = [
    cnp(
        "deny-admin-ports",
        "Admin",
        10,
        ingress=[rule("Deny", [{"namespaces": {}}], tcp(22), tcp(3389), tcp(445))],
    ),
    cnp(
        "allow-monitoring",
        "Admin",
        20,
        ingress=[rule("Accept", [{"namespaces": {"matchLabels": MON}}])],
    ),
    cnp("baseline-deny", "Baseline", 100, ingress=[rule("Deny", [{"namespaces": {}}])]),
]


def ingress(
    policies: list[tiers.ClusterPolicy],
    source: model.Pod,
    source_ns: dict[str, str],
    port: int,
    isolated: bool = False,
    np_allows: bool = False,
) -> evaluate.Verdict:
    remote = evaluate.Remote(source.ips[0], source, source_ns)
    args = (evaluate.INGRESS, WEB, SHOP, remote, "TCP", port)
    admin = evaluate.first_match(policies, tiers.ADMIN, *args)
    baseline = evaluate.first_match(policies, tiers.BASELINE, *args)
    return evaluate.decide(admin, isolated, np_allows, baseline)


def test_admin_deny_beats_a_team_allow() -> None:
    verdict = ingress(PLATFORM, API, SHOP, 22, isolated=True, np_allows=True)
    assert verdict == evaluate.Verdict(
        False, "admin", "ClusterNetworkPolicy/deny-admin-ports", "deny-rule"
    )


def test_admin_accept_beats_a_team_deny() -> None:
    verdict = ingress(PLATFORM, PROM, MON, 8080, isolated=True, np_allows=False)
    assert (verdict.allowed, verdict.tier) == (True, "admin")


def test_networkpolicy_overrides_the_baseline_both_ways() -> None:
    assert ingress(PLATFORM, API, SHOP, 8080, isolated=True, np_allows=True) == evaluate.Verdict(
        True, "networkpolicy"
    )
    assert ingress(PLATFORM, API, SHOP, 8080, isolated=True, np_allows=False).tier == (
        "networkpolicy"
    )
    # Not isolated by any NetworkPolicy: the baseline default-deny decides.
    verdict = ingress(PLATFORM, API, SHOP, 8080)
    assert (verdict.allowed, verdict.tier, verdict.policy) == (
        False,
        "baseline",
        "ClusterNetworkPolicy/baseline-deny",
    )


def test_pass_skips_the_rest_of_the_admin_tier_only() -> None:
    passing = cnp(
        "pass-shop", "Admin", 5, ingress=[rule("Pass", [{"namespaces": {"matchLabels": SHOP}}])]
    )
    policies = [passing, *PLATFORM]
    # The Pass at priority 5 wins over the Deny at 10 for shop peers: NetworkPolicy decides.
    assert ingress(policies, API, SHOP, 22, isolated=True, np_allows=True).tier == "networkpolicy"
    # ...and with no NetworkPolicy the baseline still applies.
    assert ingress(policies, API, SHOP, 22).tier == "baseline"
    # Monitoring is not passed: the Deny on 22 still applies to it.
    assert ingress(policies, PROM, MON, 22, isolated=True, np_allows=True).tier == "admin"


def test_priority_then_rule_order_decides() -> None:
    first = cnp(
        "a",
        "Admin",
        1,
        ingress=[rule("Accept", [{"namespaces": {}}], tcp(80)), rule("Deny", [{"namespaces": {}}])],
    )
    later = cnp("b", "Admin", 0, ingress=[rule("Deny", [{"namespaces": {}}], tcp(80))])
    assert not ingress([first, later], API, SHOP, 80).allowed  # priority 0 first
    reordered = cnp("b", "Admin", 2, ingress=[rule("Deny", [{"namespaces": {}}], tcp(80))])
    assert ingress([first, reordered], API, SHOP, 80).allowed  # now a's Accept first
    assert not ingress([first, reordered], API, SHOP, 81).allowed  # a's second rule


def test_named_ports_resolve_on_the_destination_pod() -> None:
    policy = cnp(
        "named",
        "Admin",
        1,
        ingress=[rule("Deny", [{"namespaces": {}}], {"destinationNamedPort": "http"})],
    )
    assert not ingress([policy], API, SHOP, 8080).allowed
    assert ingress([policy], API, SHOP, 8081).tier == "default"


def test_egress_networks_and_nodes() -> None:
    policy = cnp(
        "egress",
        "Admin",
        1,
        egress=[
            {
                "name": "nodes",
                "action": "Deny",
                "to": [{"nodes": {"matchLabels": {"role": "worker"}}}],
            },
            {"name": "net", "action": "Deny", "to": [{"networks": ["203.0.113.0/24"]}]},
        ],
    )

    def egress(remote: evaluate.Remote) -> evaluate.Match | None:
        return evaluate.first_match(
            [policy], tiers.ADMIN, evaluate.EGRESS, WEB, SHOP, remote, "TCP", 443
        )

    node = evaluate.Remote("198.18.0.1", node_labels={"role": "worker"})
    assert egress(node) is not None and egress(node).rule == "nodes"  # type: ignore[union-attr]
    assert egress(evaluate.Remote("198.18.0.1", node_labels={"role": "control"})) is None
    assert egress(evaluate.Remote("203.0.113.9")).rule == "net"  # type: ignore[union-attr]
    assert egress(evaluate.Remote("203.0.114.9")) is None


@pytest.mark.parametrize("action", ["Deny", "Pass"])
def test_unknown_peer_fails_closed(action: str) -> None:
    raw = {"name": "new", "action": action, "from": [{"someFuturePeer": {}}]}
    policy = convert.cluster_network_policy(
        {
            "metadata": {"name": "x"},
            "spec": {
                "tier": "Admin",
                "priority": 1,
                "subject": {"namespaces": {}},
                "ingress": [raw],
            },
        }
    )
    verdict = ingress([policy], API, SHOP, 80, isolated=True, np_allows=True)
    assert (verdict.allowed, verdict.tier) == (False, "admin")


def test_unknown_peer_in_an_accept_rule_matches_nothing() -> None:
    raw = {"name": "new", "action": "Accept", "from": [{"someFuturePeer": {}}]}
    policy = convert.cluster_network_policy(
        {
            "metadata": {"name": "x"},
            "spec": {
                "tier": "Admin",
                "priority": 1,
                "subject": {"namespaces": {}},
                "ingress": [raw],
            },
        }
    )
    assert ingress([policy], API, SHOP, 80, isolated=True, np_allows=False).tier == "networkpolicy"


def test_subject_and_host_network() -> None:
    only_api = convert.cluster_network_policy(
        {
            "metadata": {"name": "api-only"},
            "spec": {
                "tier": "Admin",
                "priority": 1,
                "subject": {
                    "pods": {
                        "namespaceSelector": {},
                        "podSelector": {"matchLabels": {"app": "api"}},
                    }
                },
                "ingress": [rule("Deny", [{"namespaces": {}}])],
            },
        }
    )
    assert ingress([only_api], API, SHOP, 80).tier == "default"  # WEB is not the subject
    assert evaluate.selects(only_api.subject, API, SHOP)
    host = model.Pod("shop", "h", labels={"app": "api"}, host_network=True)
    assert not evaluate.selects(only_api.subject, host, SHOP)
