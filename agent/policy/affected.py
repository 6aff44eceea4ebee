"""Which local pods a batch of API changes can affect, so only those are recompiled. Pure.

Recompiling every local pod on every event costs milliseconds per pod; on a node with a hundred
pods that is the whole latency budget. The answer here may be too large (a pod recompiled for
nothing is only a skipped apply, since fingerprints match) but must never be too small: a pod
left out keeps a stale ruleset. So every rule below errs towards "affected", and the property
test compares it with recompiling everything.

* A relist, a node change, or a namespace created or deleted: all.
* A namespace relabel (`namespaces` given): the local pods of that namespace (its labels set
  their policy mode and node-guard exemption) and the local pods selected by a policy with a
  namespaceSelector peer that matches the old or the new labels (only those peers can move).
* A policy change: the local pods its old or new version selects.
* A pod change: the pod itself if local, plus every local pod selected by a policy with a
  selector peer that matches the old or new version of the pod, or with an egress rule naming
  a port (those resolve against whichever pods the rule covers).
* A Service or EndpointSlice change: every local pod whose egress is isolated (only egress
  rules translate Services, `agent.policy.services`; the translation depends on the compiled
  egress and the Services, never on other pods directly, so pod changes need nothing new).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

from agent import model, selectors
from agent.policy import compile as policy_compile


@dataclasses.dataclass(frozen=True)
class Changes:
    """Old and new versions of what changed in one batch (None: absent on that side)."""

    pods: Mapping[str, tuple[model.Pod | None, model.Pod | None]]
    policies: Mapping[str, tuple[model.NetworkPolicy | None, model.NetworkPolicy | None]]
    namespaces_changed: bool = False
    relisted: bool = False
    services_changed: bool = False
    # Old and new versions of the namespaces that changed, when known: lets a pure relabel
    # recompile only the pods whose policies select namespaces by labels.
    namespaces: Mapping[str, tuple[model.Namespace | None, model.Namespace | None]] = (
        dataclasses.field(default_factory=dict)
    )


def _peer_matches(
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
        peer.namespace_selector, policy_compile.namespace_labels(pod.namespace, namespaces)
    ):
        return False
    return peer.pod_selector is None or selectors.matches(peer.pod_selector, pod.labels)


def _depends_on_pod(
    policy: model.NetworkPolicy,
    pods: Iterable[model.Pod],
    namespaces: Mapping[str, model.Namespace],
) -> bool:
    """Whether any version in `pods` could change what `policy` allows."""
    candidates = [p for p in pods if policy_compile.is_peer_candidate(p)]
    if not candidates:
        return False
    for rule in policy.egress:
        if any(isinstance(port.port, str) for port in rule.ports):
            return True
    for rule in (*policy.ingress, *policy.egress):
        for peer in rule.peers:
            if any(_peer_matches(policy, peer, pod, namespaces) for pod in candidates):
                return True
    return False


def affected(
    local: Mapping[str, model.Pod],
    policies: Iterable[model.NetworkPolicy],
    namespaces: Mapping[str, model.Namespace],
    changes: Changes,
    policies_for: Callable[[model.Pod], Iterable[model.NetworkPolicy]] | None = None,
) -> set[str] | None:
    """Keys of the local pods to recompile; None means all of them.

    `policies_for` (optional) gives, for a pod, a superset of the policies that may select
    it (the store's policy index); without it every policy of the pod's namespace is tried."""
    if changes.relisted:
        return None
    result: set[str] = set()
    if changes.namespaces_changed:
        relabelled = _relabelled_pods(local, policies, changes.namespaces)
        if relabelled is None:
            return None
        result |= relabelled
    for old_policy, new_policy in changes.policies.values():
        for key, pod in local.items():
            if any(
                p is not None and policy_compile.selects(p, pod) for p in (old_policy, new_policy)
            ):
                result.add(key)
    if changes.services_changed:
        policy_list = list(policies)
        for key, pod in local.items():
            if any(p.isolates_egress and policy_compile.selects(p, pod) for p in policy_list):
                result.add(key)
        policies = policy_list
    if not changes.pods:
        return result
    versions: list[model.Pod] = []
    for key, (old, new) in changes.pods.items():
        if key in local:
            result.add(key)
        versions.extend(p for p in (old, new) if p is not None)
    if not any(policy_compile.is_peer_candidate(p) for p in versions):
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
            if not policy_compile.selects(policy, pod):
                continue
            if policy.key not in dependent:
                dependent[policy.key] = _depends_on_pod(policy, versions, namespaces)
            if dependent[policy.key]:
                result.add(key)
                break
    return result


def _relabelled_pods(
    local: Mapping[str, model.Pod],
    policies: Iterable[model.NetworkPolicy],
    namespaces: Mapping[str, tuple[model.Namespace | None, model.Namespace | None]],
) -> set[str] | None:
    """Local pods whose rulesets a relabel of `namespaces` can change; None: cannot tell."""
    if not namespaces or any(old is None or new is None for old, new in namespaces.values()):
        return None
    label_sets = [
        policy_compile.namespace_labels(name, {name: version})
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
        or any(policy_compile.selects(policy, pod) for policy in dependent)
    }
