"""Policy status, computed: which pods each NetworkPolicy selects cluster-wide, on which nodes
they run, and on which of those nodes the policy is realized (programmed at its current
version). Pure: the leader agent (agent.sync.leader) and `podseg policies` run the same code,
so an operator sees exactly what the Events are based on.

A node's report maps policy keys to the resourceVersion its agent has programmed for every
local pod the policy selects (`realized_on_node`); a policy is realized on a node when that
version is the policy's current one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from agent import model
from agent.calc import compile as calc_compile


@dataclasses.dataclass(frozen=True)
class PolicyStatus:
    """One policy's status. `nodes`: nodes running a selected pod; `realized`: those whose
    agent reports the current version programmed; `missing`: the others."""

    namespace: str
    name: str
    resource_version: str
    selected_pods: int
    nodes: tuple[str, ...]
    realized: tuple[str, ...]
    errors: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(n for n in self.nodes if n not in self.realized)

    @property
    def fully_realized(self) -> bool:
        return not self.missing

    def as_json(self) -> dict[str, object]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "resourceVersion": self.resource_version,
            "selectedPods": self.selected_pods,
            "nodes": list(self.nodes),
            "realizedNodes": list(self.realized),
            "missingNodes": list(self.missing),
            "realized": self.fully_realized,
            "invalidParts": list(self.errors),
        }


def enforced_pod(pod: model.Pod) -> bool:
    """A pod some agent enforces: scheduled, pod network, holding an address, not finished."""
    return bool(pod.node_name) and calc_compile.is_peer_candidate(pod)


def compute(
    policies: Iterable[model.NetworkPolicy],
    pods: Iterable[model.Pod],
    namespaces: Mapping[str, model.Namespace],
    reports: Mapping[str, Mapping[str, str]],
) -> list[PolicyStatus]:
    """Status of every policy, sorted by key. `reports`: node -> {policy key: programmed
    resourceVersion}; a node without a report realizes nothing."""
    del namespaces  # podSelector matches within the policy's namespace only
    by_namespace: dict[str, list[model.Pod]] = {}
    for pod in pods:
        if enforced_pod(pod):
            by_namespace.setdefault(pod.namespace, []).append(pod)
    out = []
    for policy in sorted(policies, key=lambda p: p.key):
        chosen = [
            p for p in by_namespace.get(policy.namespace, ()) if calc_compile.selects(policy, p)
        ]
        nodes = tuple(sorted({p.node_name or "" for p in chosen}))
        realized = tuple(
            n for n in nodes if reports.get(n, {}).get(policy.key) == policy.resource_version
        )
        out.append(
            PolicyStatus(
                policy.namespace,
                policy.name,
                policy.resource_version,
                len(chosen),
                nodes,
                realized,
                tuple(policy.errors),
            )
        )
    return out


def realized_on_node(
    policies: Iterable[model.NetworkPolicy],
    local_pods: Iterable[model.Pod],
    programmed: Mapping[str, tuple[str, ...] | None],
) -> dict[str, str]:
    """A node's report: {policy key: resourceVersion} of each policy that selects a local pod
    and is part of the programmed ruleset of every local pod it selects. `programmed`: pod key
    -> policy keys of its committed ruleset, None when the pod is not enforced right now."""
    local = [p for p in local_pods if enforced_pod(p)]
    out: dict[str, str] = {}
    for policy in policies:
        chosen = [
            p for p in local if p.namespace == policy.namespace and calc_compile.selects(policy, p)
        ]
        if chosen and all(policy.key in (programmed.get(p.key) or ()) for p in chosen):
            out[policy.key] = policy.resource_version
    return out
