"""An index of NetworkPolicies by what their `podSelector` needs, so that finding the policies
that select a pod does not scan every policy of the cluster. Pure.

A policy is filed under its namespace and, when its podSelector has matchLabels, under its
first (key, value) pair; a pod only needs the policies filed under its namespace with no pair,
or under one of its own labels. The answer is a superset (matchExpressions and the other pairs
are checked by `compile.selects`), never a subset: a policy that could select the pod is
always among the candidates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from agent import model


@dataclasses.dataclass(frozen=True)
class PolicyIndex:
    """namespace -> (policies without matchLabels, {(key, value): policies})."""

    unkeyed: Mapping[str, tuple[model.NetworkPolicy, ...]]
    keyed: Mapping[str, Mapping[tuple[str, str], tuple[model.NetworkPolicy, ...]]]

    @classmethod
    def build(cls, policies: Iterable[model.NetworkPolicy]) -> PolicyIndex:
        unkeyed: dict[str, list[model.NetworkPolicy]] = {}
        keyed: dict[str, dict[tuple[str, str], list[model.NetworkPolicy]]] = {}
        for policy in policies:
            selector = policy.pod_selector
            if selector is not None and selector.match_labels:
                pair = selector.match_labels[0]
                keyed.setdefault(policy.namespace, {}).setdefault(pair, []).append(policy)
            else:
                unkeyed.setdefault(policy.namespace, []).append(policy)
        return cls(
            unkeyed={ns: tuple(group) for ns, group in unkeyed.items()},
            keyed={
                ns: {pair: tuple(group) for pair, group in by_pair.items()}
                for ns, by_pair in keyed.items()
            },
        )

    def candidates(self, pod: model.Pod) -> list[model.NetworkPolicy]:
        """The policies of the pod's namespace that may select it."""
        out = list(self.unkeyed.get(pod.namespace, ()))
        by_pair = self.keyed.get(pod.namespace)
        if by_pair:
            for pair in pod.labels.items():
                out.extend(by_pair.get(pair, ()))
        return out
