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
from agent.calc import affected
from tests.support import randomcluster as rc


def test_affected_is_a_superset_of_what_really_changed() -> None:
    rnd = random.Random(1234)
    narrowed = 0
    for _ in range(400):
        namespaces = {f"ns{i}": rc.namespace(rnd, i) for i in range(3)}
        pods = {p.key: p for p in (rc.pod(rnd, i) for i in range(12))}
        policies = {p.key: p for p in (rc.policy(rnd, i) for i in range(4))}
        services = {s.key: s for s in (rc.service(rnd, i) for i in range(3))}
        slices = {
            e.key: e
            for s in services.values()
            for e in (rc.endpoint_slice(rnd, s, j) for j in range(2))
        }
        before = rc.compile_all(pods, policies, namespaces, services, slices)
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
            new = dataclasses.replace(pods[key], labels=rc.pod(rnd, 0).labels)
            new_pods[key] = new
            pod_changes[key] = (pods[key], new)
        elif op == 1:  # delete a pod
            key = rnd.choice(list(pods))
            del new_pods[key]
            pod_changes[key] = (pods[key], None)
        elif op == 2:  # add a pod (reusing a free address)
            new = dataclasses.replace(rc.pod(rnd, 40), name="fresh")
            new_pods[new.key] = new
            pod_changes[new.key] = (None, new)
        elif op == 3:  # change a policy
            key = rnd.choice(list(policies))
            old = policies[key]
            new_policy = dataclasses.replace(
                rc.policy(rnd, 0), namespace=old.namespace, name=old.name
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
            new_slices[key] = dataclasses.replace(
                rc.endpoint_slice(rnd, service, 0), name=slices[key].name
            )
            services_changed = True
        elif op == 6:  # a slice goes away
            del new_slices[rnd.choice(list(slices))]
            services_changed = True
        elif op == 8:  # relabel a namespace
            name = f"ns{rnd.randrange(3)}"
            new_namespaces[name] = rc.namespace(rnd, int(name[2:]))
            namespace_changes[name] = (namespaces[name], new_namespaces[name])
        else:  # a Service changes or goes away
            key = rnd.choice(list(services))
            if rnd.random() < 0.5:
                del new_services[key]
            else:
                fresh = rc.service(rnd, int(services[key].name[3:]))
                new_services[key] = dataclasses.replace(fresh, namespace=services[key].namespace)
            services_changed = True
        after = rc.compile_all(new_pods, new_policies, new_namespaces, new_services, new_slices)
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
