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
  rules translate Services, `agent.calc.services`; the translation depends on the compiled
  egress and the Services, never on other pods directly, so pod changes need nothing new).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence

from agent import model, selectors
from agent.calc import compile as calc_compile


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
    labels_of: Callable[[str], Mapping[str, str]],
) -> bool:
    """Whether a selector peer of `policy` covers `pod` (`labels_of`: a namespace's labels).
    The cheap tests come first: the namespace name, then the pod's own labels, and only then
    the namespace's labels (a dict built per namespace)."""
    if peer.invalid or peer.ip_block is not None:
        return False
    if peer.namespace_selector is None and pod.namespace != policy.namespace:
        return False
    if peer.pod_selector is not None and not selectors.matches(peer.pod_selector, pod.labels):
        return False
    return peer.namespace_selector is None or selectors.matches(
        peer.namespace_selector, labels_of(pod.namespace)
    )


def _depends_on_pod(
    policy: model.NetworkPolicy,
    candidates: Sequence[model.Pod],
    labels_of: Callable[[str], Mapping[str, str]],
) -> bool:
    """Whether any of `candidates` (pod versions that are peer candidates, at least one)
    could change what `policy` allows."""
    for rule in policy.egress:
        if any(isinstance(port.port, str) for port in rule.ports):
            return True
    for rules in (policy.ingress, policy.egress):
        for rule in rules:
            for peer in rule.peers:
                for pod in candidates:
                    if _peer_matches(policy, peer, pod, labels_of):
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
    policy_list = list(policies)
    result: set[str] = set()
    if changes.namespaces_changed:
        relabelled = _relabelled_pods(local, policy_list, changes.namespaces)
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
        for key, pod in local.items():
            if any(p.isolates_egress and calc_compile.selects(p, pod) for p in policy_list):
                result.add(key)
    if changes.pods:
        result |= _peer_changes(local, policy_list, namespaces, changes, policies_for, result)
    return result


def _peer_changes(
    local: Mapping[str, model.Pod],
    policies: list[model.NetworkPolicy],
    namespaces: Mapping[str, model.Namespace],
    changes: Changes,
    policies_for: Callable[[model.Pod], Iterable[model.NetworkPolicy]] | None,
    already: set[str],
) -> set[str]:
    """Local pods a pod change touches: the changed pods themselves, and the pods selected by
    a policy whose peers the changed pods' old or new versions may be (beyond `already`)."""
    result: set[str] = set()
    versions: list[model.Pod] = []
    for key, (old, new) in changes.pods.items():
        if key in local:
            result.add(key)
        versions.extend(p for p in (old, new) if p is not None)
    candidates = [p for p in versions if calc_compile.is_peer_candidate(p)]
    if not candidates:
        return result
    by_namespace: dict[str, list[model.NetworkPolicy]] = {}
    if policies_for is None:
        for policy in policies:
            by_namespace.setdefault(policy.namespace, []).append(policy)
    namespace_labels: dict[str, Mapping[str, str]] = {}

    def labels_of(name: str) -> Mapping[str, str]:
        labels = namespace_labels.get(name)
        if labels is None:
            labels = namespace_labels[name] = calc_compile.namespace_labels(name, namespaces)
        return labels

    # Keyed by the policy object (kept alive in the value): a policy's dependence is decided
    # once per call. It is asked before `selects`, as it is false for most policies.
    dependent: dict[int, tuple[model.NetworkPolicy, bool]] = {}
    for key, pod in local.items():
        if key in already or key in result:
            continue
        pod_policies = (
            policies_for(pod) if policies_for is not None else by_namespace.get(pod.namespace, ())
        )
        for policy in pod_policies:
            known = dependent.get(id(policy))
            if known is None:
                known = dependent[id(policy)] = (
                    policy,
                    _depends_on_pod(policy, candidates, labels_of),
                )
            if known[1] and calc_compile.selects(policy, pod):
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
        calc_compile.namespace_labels(name, {name: version})
        for name, pair in namespaces.items()
        for version in pair
        if version is not None
    ]
    dependent: dict[str, list[model.NetworkPolicy]] = {}  # by namespace: only those select
    for policy in policies:
        for rule in (*policy.ingress, *policy.egress):
            if any(
                not peer.invalid
                and peer.namespace_selector is not None
                and any(selectors.matches(peer.namespace_selector, ls) for ls in label_sets)
                for peer in rule.peers
            ):
                dependent.setdefault(policy.namespace, []).append(policy)
                break
    # A pod's own namespace labels choose its mode and node-guard exemption: its pods too.
    return {
        key
        for key, pod in local.items()
        if pod.namespace in namespaces
        or any(calc_compile.selects(policy, pod) for policy in dependent.get(pod.namespace, ()))
    }
