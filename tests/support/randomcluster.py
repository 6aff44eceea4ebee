"""Random small clusters for the calc tests: namespaces (some with a mode or node-guard
label), pods on two nodes, policies with random selectors, peers and ports, Services with
EndpointSlices, and `compile_all`, the brute-force truth: what the reconciler programs for
every local pod (the desired ruleset with quarantine and node guard)."""

from __future__ import annotations

import random
from typing import Any

from agent import model
from agent.calc import containment
from agent.calc import desired as calc_desired
from agent.calc import mode as calc_mode
from agent.k8s import convert

APPS = ("a", "b", "c")


NODES = (model.Node("node-1", ("198.18.0.1",)), model.Node("node-2", ("198.18.128.1",)))


GUARD_PORTS = containment.parse_ports(containment.DEFAULT_NODE_GUARD_PORTS)


def namespace(rnd: random.Random, i: int) -> model.Namespace:
    labels = {"team": rnd.choice(("t1", "t2"))}
    if rnd.random() < 0.3:
        labels[calc_mode.LABEL] = rnd.choice(("enforce", "visibility"))
    if rnd.random() < 0.2:
        labels[containment.NODE_GUARD_LABEL] = "off"
    return model.Namespace(f"ns{i}", labels)


def pod(rnd: random.Random, i: int) -> model.Pod:
    labels = {"app": rnd.choice(APPS)}
    if rnd.random() < 0.5:
        labels["tier"] = rnd.choice(("x", "y"))
    return model.Pod(
        namespace=f"ns{rnd.randrange(3)}",
        name=f"p{i}",
        labels=labels,
        node_name=rnd.choice(("node-1", "node-2")),
        host_network=rnd.random() < 0.05,
        ips=() if rnd.random() < 0.1 else (f"198.18.1.{i + 1}",),
        container_ports=(
            model.ContainerPort(rnd.choice((80, 8080)), "TCP", rnd.choice(("http", "web"))),
        ),
        phase=rnd.choice(("Running", "Running", "Running", "Succeeded")),
    )


def _selector(rnd: random.Random) -> dict[str, Any]:
    choice = rnd.randrange(4)
    if choice == 0:
        return {}
    if choice == 1:
        return {"matchLabels": {"app": rnd.choice(APPS)}}
    if choice == 2:
        return {
            "matchExpressions": [
                {"key": "tier", "operator": rnd.choice(("Exists", "DoesNotExist"))}
            ]
        }
    return {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": [rnd.choice(APPS)]}]}


def _peer(rnd: random.Random) -> dict[str, Any]:
    choice = rnd.randrange(4)
    if choice == 0:
        return {"podSelector": _selector(rnd)}
    if choice == 1:
        return {"namespaceSelector": {"matchLabels": {"team": rnd.choice(("t1", "t2"))}}}
    if choice == 2:
        return {"namespaceSelector": _selector(rnd) | {}, "podSelector": _selector(rnd)}
    return {"ipBlock": {"cidr": "198.18.1.0/28"}}


def _rule(rnd: random.Random, direction: str) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    if rnd.random() < 0.8:
        rule["from" if direction == "ingress" else "to"] = [
            _peer(rnd) for _ in range(rnd.randrange(1, 3))
        ]
    if rnd.random() < 0.6:
        rule["ports"] = [{"port": rnd.choice((80, "http", "web", 8080))}]
    return rule


def policy(rnd: random.Random, i: int) -> model.NetworkPolicy:
    spec: dict[str, Any] = {"podSelector": _selector(rnd)}
    types = rnd.choice((["Ingress"], ["Egress"], ["Ingress", "Egress"]))
    spec["policyTypes"] = types
    if "Ingress" in types:
        spec["ingress"] = [_rule(rnd, "ingress") for _ in range(rnd.randrange(0, 3))]
    if "Egress" in types:
        spec["egress"] = [_rule(rnd, "egress") for _ in range(rnd.randrange(0, 3))]
    return convert.network_policy(
        {"metadata": {"namespace": f"ns{rnd.randrange(3)}", "name": f"pol{i}"}, "spec": spec}
    )


def service(rnd: random.Random, i: int) -> model.Service:
    return convert.service(
        {
            "metadata": {"namespace": f"ns{rnd.randrange(3)}", "name": f"svc{i}"},
            "spec": {
                "clusterIP": f"198.19.192.{10 + i}",
                "selector": {"app": rnd.choice(APPS)},
                "internalTrafficPolicy": rnd.choice(("Cluster", "Local")),
                "ports": [
                    {"name": "a", "port": 5000 + i, "targetPort": rnd.choice((80, 8080))},
                    {"name": "b", "port": 6000 + i, "protocol": "UDP", "targetPort": 80},
                ],
            },
        }
    )


def endpoint_slice(rnd: random.Random, service: model.Service, j: int) -> model.EndpointSlice:
    return convert.endpoint_slice(
        {
            "metadata": {
                "namespace": service.namespace,
                "name": f"{service.name}-{j}",
                "labels": {"kubernetes.io/service-name": service.name},
            },
            "addressType": "IPv4",
            "endpoints": [
                {
                    "addresses": [f"198.18.1.{rnd.randrange(1, 14)}"],
                    "conditions": {"ready": rnd.random() < 0.7},
                    "nodeName": rnd.choice(("node-1", "node-2")),
                }
                for _ in range(rnd.randrange(0, 4))
            ],
            "ports": [
                {"name": "a", "port": rnd.choice((80, 8080))},
                {"name": "b", "port": 80, "protocol": "UDP"},
            ],
        }
    )


def compile_all(
    pods: dict[str, model.Pod],
    policies: dict[str, model.NetworkPolicy],
    namespaces: dict[str, model.Namespace],
    services: dict[str, model.Service] | None = None,
    slices: dict[str, model.EndpointSlice] | None = None,
) -> dict[str, Any]:
    local = {k: p for k, p in pods.items() if p.node_name == "node-1" and not p.host_network}
    cluster = calc_desired.Cluster.of(
        pods=pods.values(),
        namespaces=namespaces,
        policies=policies.values(),
        nodes=NODES,
        services=(services or {}).values(),
        endpointslices=(slices or {}).values(),
        guard_ports=GUARD_PORTS,
    )
    return {k: calc_desired.desired(p, cluster).ruleset for k, p in local.items()}
