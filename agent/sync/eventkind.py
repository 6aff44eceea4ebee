"""What kind of change a batch of API events was, for `podseg_policy_programming_seconds{kind}`.

Why: one histogram per resource ("pods") mixes a label change with a new pod IP, while the
benchmarks (scripts/bench/) and users care about each separately. The kinds are a small fixed
set, so the label stays bounded: pod_added, pod_deleted, pod_ip (a pod's addresses changed,
e.g. a new pod got its IP), pod_labels, pod_other, namespace_labels, namespace, policy, node,
relist, and mixed for a batch holding several kinds. A batch of Service or EndpointSlice
changes alone classifies as "" and the reconciler names it by its resource (`services`,
`endpointslices`). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from agent import model

if TYPE_CHECKING:
    from agent import store

KINDS = (
    "pod_added",
    "pod_deleted",
    "pod_ip",
    "pod_labels",
    "pod_other",
    "namespace_labels",
    "namespace",
    "policy",
    "node",
    "relist",
    "mixed",
)


def _pod_kind(old: model.Pod | None, new: model.Pod | None) -> str:
    if old is None:
        return "pod_added"
    if new is None:
        return "pod_deleted"
    if old.ips != new.ips:
        return "pod_ip"
    if old.labels != new.labels:
        return "pod_labels"
    return "pod_other"


def classify(
    change: store.Change,
    pods: Mapping[str, model.Pod],
    namespaces: Mapping[str, model.Namespace],
) -> str:
    """The kind of one batch; "" when it changed nothing."""
    if change.relisted:
        return "relist"
    kinds = {_pod_kind(old, pods.get(key)) for key, old in change.pods.items()}
    for key, old_ns in change.namespaces.items():
        new_ns = namespaces.get(key)
        relabelled = old_ns is not None and new_ns is not None and old_ns.labels != new_ns.labels
        kinds.add("namespace_labels" if relabelled else "namespace")
    if change.policies:
        kinds.add("policy")
    if change.nodes:
        kinds.add("node")
    if not kinds:
        return ""
    return kinds.pop() if len(kinds) == 1 else "mixed"
