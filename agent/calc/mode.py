"""Which policy mode a pod runs in: the `podseg.io/mode` label of its namespace, which a pod
label may only make stricter.

Operators audit a workload before enforcing it: `visibility` programs the same ruleset but
logs and accepts what it would drop. The mode is governed by whoever governs namespaces: a
pod label `enforce` in a visibility namespace enforces that pod, but a pod label
`visibility` in an enforcing namespace is refused (whoever can create a pod must not be able
to switch its enforcement off), unless the operator allows pods to loosen their mode
(`--allow-pod-visibility`). No label means `enforce`. An unknown value also means `enforce`
(a typo must never open a pod up). Refused and unknown values are reported by the sync layer.
Pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from agent import model
from agent.calc import ruleset

LABEL = "podseg.io/mode"
_MODES = {m.value: m for m in ruleset.PolicyMode}
# How strict each mode is: a pod label may only move up this order (unless allowed).
_STRICTNESS = {ruleset.PolicyMode.VISIBILITY: 0, ruleset.PolicyMode.ENFORCE: 1}


@dataclasses.dataclass(frozen=True)
class Resolution:
    mode: ruleset.PolicyMode
    invalid: str | None = None  # a label value that is no mode (ignored: enforce)
    refused: str | None = None  # a pod label that would have loosened its namespace's mode


def _parse(value: str | None) -> tuple[ruleset.PolicyMode | None, str | None]:
    """(mode or None when absent/invalid, the invalid value)."""
    if value is None:
        return None, None
    mode = _MODES.get(value.strip().lower())
    return (mode, None) if mode is not None else (None, value)


def resolve(
    pod: model.Pod,
    namespaces: Mapping[str, model.Namespace],
    pod_may_loosen: bool = False,
) -> Resolution:
    """The pod's mode: its namespace's, made stricter by the pod's own label; looser only
    with `pod_may_loosen`."""
    ns = namespaces.get(pod.namespace)
    ns_mode, ns_invalid = _parse(ns.labels.get(LABEL) if ns is not None else None)
    base = ns_mode or ruleset.PolicyMode.ENFORCE  # invalid means enforce
    pod_mode, pod_invalid = _parse(pod.labels.get(LABEL))
    if pod_invalid is not None:  # a typo on the pod must never open it up
        return Resolution(ruleset.PolicyMode.ENFORCE, pod_invalid)
    invalid = ns_invalid
    if pod_mode is None or pod_mode is base:
        return Resolution(base, invalid)
    if _STRICTNESS[pod_mode] > _STRICTNESS[base] or pod_may_loosen:
        return Resolution(pod_mode, invalid)
    return Resolution(base, invalid, refused=pod.labels.get(LABEL))
