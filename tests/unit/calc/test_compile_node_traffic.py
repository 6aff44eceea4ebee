"""Upstream semantics: an ingress-isolated pod still admits traffic from its own node."""

from __future__ import annotations

from agent import model
from agent.calc import compile as calc_compile
from agent.calc import intervals
from agent.k8s import convert

POD = model.Pod("x", "a", labels={"app": "a"}, node_name="node-1", ips=("198.18.1.2",))
DENY_INGRESS = model.NetworkPolicy("x", "deny", policy_types=("Ingress",))
DENY_EGRESS = model.NetworkPolicy("x", "deny-egress", policy_types=("Egress",))
NODE = ("198.18.0.1", "fd00:198:18:1::1")


def test_node_addresses_are_admitted_only_when_ingress_is_isolated() -> None:
    open_pod = calc_compile.compile_pod(POD, [], {}, [POD], NODE)
    assert not open_pod.ingress.isolated and open_pod.ingress.any_port_peers == ()
    isolated = calc_compile.compile_pod(POD, [DENY_INGRESS, DENY_EGRESS], {}, [POD], NODE)
    assert isolated.ingress.any_port_peers == tuple(
        sorted(intervals.address_range(a) for a in NODE)
    )
    assert isolated.egress.isolated and isolated.egress.any_port_peers == ()  # egress: no


def test_without_node_addresses_nothing_extra_is_admitted() -> None:
    isolated = calc_compile.compile_pod(POD, [DENY_INGRESS], {}, [POD])
    assert isolated.ingress.isolated and isolated.ingress.any_port_peers == ()


def test_node_conversion_keeps_ip_addresses_only() -> None:
    node = convert.node(
        {
            "metadata": {"name": "node-1"},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": "198.18.0.1"},
                    {"type": "ExternalIP", "address": "fd00:198:18:1:0::1"},
                    {"type": "Hostname", "address": "node-1"},
                    {"type": "InternalIP", "address": "not-an-ip"},
                ]
            },
        }
    )
    assert node.addresses == ("198.18.0.1", "fd00:198:18:1::1")
