"""`affected.affected` gives exactly the sets of its reference form.

The reference is `_reference_affected` below, a direct statement of which pods a change can
affect; random snapshots and changes of every kind -- pod relabels, additions, deletions and
IP changes, policy edits, namespace relabels, Service churn -- are fed to both, with and
without the store's policy index, and the answers must be equal (None included).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from agent import model, selectors
from agent.calc import affected
from agent.calc import compile as calc_compile
from agent.calc import index as calc_index
from tests.support import randomcluster as rc


def _ref_peer_matches(
    policy: model.NetworkPolicy,
    peer: model.Peer,
    pod: model.Pod,
    namespaces: Mapping[str, model.Namespace],
) -> bool:
    if peer.invalid or peer.ip_block is not None:
        return False
    if peer.namespace_selector is None:
        if pod.namespace != policy.namespace:
            return False
    elif not selectors.matches(
        peer.namespace_selector, calc_compile.namespace_labels(pod.namespace, namespaces)
    ):
        return False
    return peer.pod_selector is None or selectors.matches(peer.pod_selector, pod.labels)


def _ref_depends_on_pod(
    policy: model.NetworkPolicy,
    pods: Iterable[model.Pod],
    namespaces: Mapping[str, model.Namespace],
) -> bool:
    """Whether any version in `pods` could change what `policy` allows."""
    candidates = [p for p in pods if calc_compile.is_peer_candidate(p)]
    if not candidates:
        return False
    for rule in policy.egress:
        if any(isinstance(port.port, str) for port in rule.ports):
            return True
    for rule in (*policy.ingress, *policy.egress):
        for peer in rule.peers:
            if any(_ref_peer_matches(policy, peer, pod, namespaces) for pod in candidates):
                return True
    return False


def _reference_affected(
    local: Mapping[str, model.Pod],
    policies: Iterable[model.NetworkPolicy],
    namespaces: Mapping[str, model.Namespace],
    changes: affected.Changes,
    policies_for: Callable[[model.Pod], Iterable[model.NetworkPolicy]] | None = None,
) -> set[str] | None:
    """Keys of the local pods to recompile; None means all of them.

    `policies_for` (optional) gives, for a pod, a superset of the policies that may select
    it (the store's policy index); without it every policy of the pod's namespace is tried."""
    if changes.relisted:
        return None
    result: set[str] = set()
    if changes.namespaces_changed:
        relabelled = _ref_relabelled_pods(local, policies, changes.namespaces)
        if relabelled is None:
            return None
        result |= relabelled
    for old_policy, new_policy in changes.policies.values():
        for key, pod in local.items():
            if any(
                p is not None and calc_compile.selects(p, pod) for p in (old_policy, new_policy)
            ):
                result.add(key)
    if changes.services_changed:
        policy_list = list(policies)
        for key, pod in local.items():
            if any(p.isolates_egress and calc_compile.selects(p, pod) for p in policy_list):
                result.add(key)
        policies = policy_list
    if not changes.pods:
        return result
    versions: list[model.Pod] = []
    for key, (old, new) in changes.pods.items():
        if key in local:
            result.add(key)
        versions.extend(p for p in (old, new) if p is not None)
    if not any(calc_compile.is_peer_candidate(p) for p in versions):
        return result
    by_namespace: dict[str, list[model.NetworkPolicy]] = {}
    if policies_for is None:
        for policy in policies:
            by_namespace.setdefault(policy.namespace, []).append(policy)
    dependent: dict[str, bool] = {}
    for key, pod in local.items():
        if key in result:
            continue
        candidates = (
            policies_for(pod) if policies_for is not None else by_namespace.get(pod.namespace, ())
        )
        for policy in candidates:
            if not calc_compile.selects(policy, pod):
                continue
            if policy.key not in dependent:
                dependent[policy.key] = _ref_depends_on_pod(policy, versions, namespaces)
            if dependent[policy.key]:
                result.add(key)
                break
    return result


def _ref_relabelled_pods(
    local: Mapping[str, model.Pod],
    policies: Iterable[model.NetworkPolicy],
    namespaces: Mapping[str, tuple[model.Namespace | None, model.Namespace | None]],
) -> set[str] | None:
    """Local pods whose rulesets a relabel of `namespaces` can change; None: cannot tell."""
    if not namespaces or any(old is None or new is None for old, new in namespaces.values()):
        return None
    label_sets = [
        calc_compile.namespace_labels(name, {name: version})
        for name, pair in namespaces.items()
        for version in pair
        if version is not None
    ]
    dependent = []
    for policy in policies:
        for rule in (*policy.ingress, *policy.egress):
            if any(
                not peer.invalid
                and peer.namespace_selector is not None
                and any(selectors.matches(peer.namespace_selector, ls) for ls in label_sets)
                for peer in rule.peers
            ):
                dependent.append(policy)
                break
    # A pod's own namespace labels choose its mode and node-guard exemption: its pods too.
    return {
        key
        for key, pod in local.items()
        if pod.namespace in namespaces
        or any(calc_compile.selects(policy, pod) for policy in dependent)
    }


def _random_change(
    rnd: random.Random,
    pods: dict[str, model.Pod],
    policies: dict[str, model.NetworkPolicy],
    namespaces: dict[str, model.Namespace],
) -> tuple[affected.Changes, dict[str, model.Pod], dict[str, Any], dict[str, model.Namespace]]:
    new_pods, new_policies, new_namespaces = dict(pods), dict(policies), dict(namespaces)
    pod_changes: dict[str, tuple[model.Pod | None, model.Pod | None]] = {}
    policy_changes: dict[str, tuple[Any, Any]] = {}
    namespace_changes: dict[str, tuple[model.Namespace | None, model.Namespace | None]] = {}
    services_changed = False
    for _ in range(rnd.choice((1, 1, 2, 3))):
        op = rnd.randrange(7)
        if (op in (0, 5) and not new_pods) or (op == 2 and not new_policies):
            op = 4
        if op == 0:  # relabel a pod
            key = rnd.choice(sorted(new_pods))
            new = dataclasses.replace(new_pods[key], labels=rc.pod(rnd, 0).labels)
            pod_changes[key] = (pod_changes.get(key, (new_pods[key], None))[0], new)
            new_pods[key] = new
        elif op == 1:  # a pod comes, goes, or gets an IP
            new = dataclasses.replace(rc.pod(rnd, rnd.randrange(60)), name=f"n{rnd.randrange(4)}")
            old = new_pods.get(new.key)
            if old is not None and rnd.random() < 0.4:
                del new_pods[new.key]
                pod_changes[new.key] = (old, None)
            else:
                new_pods[new.key] = new
                pod_changes[new.key] = (old, new)
        elif op == 2:  # edit or delete a policy
            key = rnd.choice(sorted(new_policies))
            old_policy = new_policies[key]
            if rnd.random() < 0.3:
                del new_policies[key]
                policy_changes[key] = (old_policy, None)
            else:
                fresh = rc.policy(rnd, 0)
                edited = dataclasses.replace(
                    fresh, namespace=old_policy.namespace, name=old_policy.name
                )
                new_policies[key] = edited
                policy_changes[key] = (old_policy, edited)
        elif op == 3:  # relabel a namespace
            name = f"ns{rnd.randrange(3)}"
            namespace_changes[name] = (new_namespaces[name], rc.namespace(rnd, int(name[2:])))
            new_namespaces[name] = namespace_changes[name][1]  # type: ignore[assignment]
        elif op == 4:
            services_changed = True
        else:  # a pod changes only in a way no rule reads (phase, host network)
            key = rnd.choice(sorted(new_pods))
            new = dataclasses.replace(new_pods[key], phase=rnd.choice(("Running", "Failed")))
            pod_changes[key] = (new_pods[key], new)
            new_pods[key] = new
    changes = affected.Changes(
        pods=pod_changes,
        policies=policy_changes,
        services_changed=services_changed,
        namespaces_changed=bool(namespace_changes) or rnd.random() < 0.02,
        namespaces=namespace_changes,
        relisted=rnd.random() < 0.02,
    )
    return changes, new_pods, new_policies, new_namespaces


def test_affected_equals_the_reference_form() -> None:
    rnd = random.Random(31)
    sizes = []
    for _ in range(1500):
        namespaces = {f"ns{i}": rc.namespace(rnd, i) for i in range(3)}
        pods = {p.key: p for p in (rc.pod(rnd, i) for i in range(rnd.randrange(4, 30)))}
        policies = {p.key: p for p in (rc.policy(rnd, i) for i in range(rnd.randrange(1, 12)))}
        changes, pods, policies, namespaces = _random_change(rnd, pods, policies, namespaces)
        local = {k: p for k, p in pods.items() if p.node_name == "node-1" and not p.host_network}
        index = calc_index.PolicyIndex.build(policies.values())
        for policies_for in (None, index.candidates):
            want = _reference_affected(
                local, policies.values(), namespaces, changes, policies_for=policies_for
            )
            got = affected.affected(
                local, policies.values(), namespaces, changes, policies_for=policies_for
            )
            assert got == want, (changes, got, want)
        sizes.append(-1 if want is None else len(want))
    assert sum(s == -1 for s in sizes) > 20  # "all" answers are exercised
    assert sum(0 <= s < 5 for s in sizes) > 300  # and narrow ones
