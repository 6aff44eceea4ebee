"""The affected-pods filter never leaves out a pod whose ruleset really changed.

Randomised: for many random snapshots and random changes, recompile every local pod before and
after the change (the brute-force truth) and require each pod whose ruleset differs to be in
`affected(...)`. Also checks that the filter actually narrows things down. Snapshots include
Services and EndpointSlices, and changes include endpoint churn, Service edits and namespace
relabels (peer labels, and the namespace's own `podseg.io/mode` and `podseg.io/node-guard`).
The truth is what the reconciler programs: the compiled ruleset with quarantine and node guard.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from agent import model
from agent.calc import affected, containment
from agent.calc import desired as calc_desired
from agent.calc import mode as calc_mode
from agent.k8s import convert

APPS = ("a", "b", "c")
NODES = (model.Node("node-1", ("198.18.0.1",)), model.Node("node-2", ("198.18.128.1",)))
GUARD_PORTS = containment.parse_ports(containment.DEFAULT_NODE_GUARD_PORTS)


def _namespace(rnd: random.Random, i: int) -> model.Namespace:
    labels = {"team": rnd.choice(("t1", "t2"))}
    if rnd.random() < 0.3:
        labels[calc_mode.LABEL] = rnd.choice(("enforce", "visibility"))
    if rnd.random() < 0.2:
        labels[containment.NODE_GUARD_LABEL] = "off"
    return model.Namespace(f"ns{i}", labels)


def _pod(rnd: random.Random, i: int) -> model.Pod:
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


def _policy(rnd: random.Random, i: int) -> model.NetworkPolicy:
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


def _service(rnd: random.Random, i: int) -> model.Service:
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


def _slice(rnd: random.Random, service: model.Service, j: int) -> model.EndpointSlice:
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


def _compile_all(
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


def test_affected_is_a_superset_of_what_really_changed() -> None:
    rnd = random.Random(1234)
    narrowed = 0
    for _ in range(400):
        namespaces = {f"ns{i}": _namespace(rnd, i) for i in range(3)}
        pods = {p.key: p for p in (_pod(rnd, i) for i in range(12))}
        policies = {p.key: p for p in (_policy(rnd, i) for i in range(4))}
        services = {s.key: s for s in (_service(rnd, i) for i in range(3))}
        slices = {
            e.key: e for s in services.values() for e in (_slice(rnd, s, j) for j in range(2))
        }
        before = _compile_all(pods, policies, namespaces, services, slices)
        new_pods, new_policies = dict(pods), dict(policies)
        new_services, new_slices = dict(services), dict(slices)
        services_changed = False
        new_namespaces = dict(namespaces)
        namespace_changes: dict[str, tuple[model.Namespace | None, model.Namespace | None]] = {}
        op = rnd.randrange(9)
        pod_changes: dict[str, tuple[model.Pod | None, model.Pod | None]] = {}
        policy_changes: dict[str, tuple[Any, Any]] = {}
        if op == 0:  # relabel a pod
            key = rnd.choice(list(pods))
            new = dataclasses.replace(pods[key], labels=_pod(rnd, 0).labels)
            new_pods[key] = new
            pod_changes[key] = (pods[key], new)
        elif op == 1:  # delete a pod
            key = rnd.choice(list(pods))
            del new_pods[key]
            pod_changes[key] = (pods[key], None)
        elif op == 2:  # add a pod (reusing a free address)
            new = dataclasses.replace(_pod(rnd, 40), name="fresh")
            new_pods[new.key] = new
            pod_changes[new.key] = (None, new)
        elif op == 3:  # change a policy
            key = rnd.choice(list(policies))
            old = policies[key]
            new_policy = dataclasses.replace(
                _policy(rnd, 0), namespace=old.namespace, name=old.name
            )
            new_policies[key] = new_policy
            policy_changes[key] = (old, new_policy)
        elif op == 4:  # delete a policy
            key = rnd.choice(list(policies))
            del new_policies[key]
            policy_changes[key] = (policies[key], None)
        elif op == 5:  # endpoint churn: a slice changes (readiness, addresses, ports)
            key = rnd.choice(list(slices))
            service = services[f"{slices[key].namespace}/{slices[key].service}"]
            new_slices[key] = dataclasses.replace(_slice(rnd, service, 0), name=slices[key].name)
            services_changed = True
        elif op == 6:  # a slice goes away
            del new_slices[rnd.choice(list(slices))]
            services_changed = True
        elif op == 8:  # relabel a namespace
            name = f"ns{rnd.randrange(3)}"
            new_namespaces[name] = _namespace(rnd, int(name[2:]))
            namespace_changes[name] = (namespaces[name], new_namespaces[name])
        else:  # a Service changes or goes away
            key = rnd.choice(list(services))
            if rnd.random() < 0.5:
                del new_services[key]
            else:
                fresh = _service(rnd, int(services[key].name[3:]))
                new_services[key] = dataclasses.replace(fresh, namespace=services[key].namespace)
            services_changed = True
        after = _compile_all(new_pods, new_policies, new_namespaces, new_services, new_slices)
        local = {
            k: p for k, p in new_pods.items() if p.node_name == "node-1" and not p.host_network
        }
        result = affected.affected(
            local,
            new_policies.values(),
            new_namespaces,
            affected.Changes(
                pods=pod_changes,
                policies=policy_changes,
                services_changed=services_changed,
                namespaces_changed=bool(namespace_changes),
                namespaces=namespace_changes,
            ),
        )
        changed = {k for k in after if before.get(k) != after[k]}
        assert result is not None
        assert changed <= result, (op, changed - result)
        narrowed += len(result) < len(local)
    assert narrowed > 50  # the filter does real work, not "always everything"


def test_namespace_change_or_relist_means_everything() -> None:
    assert affected.affected({}, [], {}, affected.Changes({}, {}, namespaces_changed=True)) is None
    assert affected.affected({}, [], {}, affected.Changes({}, {}, relisted=True)) is None


def test_namespace_relabel_recompiles_that_namespaces_own_pods() -> None:
    """Its labels set the pods' mode (`podseg.io/mode`) and node-guard exemption
    (`podseg.io/node-guard=off`), with no policy selecting namespaces by label."""
    pods = {
        f"{ns}/p": model.Pod(namespace=ns, name="p", labels={}, node_name="node-1")
        for ns in ("infra", "other")
    }
    old = model.Namespace("infra", {"podseg.io/node-guard": "off"})
    new = model.Namespace("infra", {})
    changes = affected.Changes({}, {}, namespaces_changed=True, namespaces={"infra": (old, new)})
    assert affected.affected(pods, [], {"infra": new}, changes) == {"infra/p"}
