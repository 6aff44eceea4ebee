"""Which policy mode a pod runs in: the `podseg.io/mode` label, on the pod or its namespace.

Operators audit a workload before enforcing it: `visibility` programs the same ruleset but
logs and accepts what it would drop. The pod's label wins over its namespace's; no label means
`enforce`. An unknown value also means `enforce` (a typo must never open a pod up) and is
reported by the reconciler (`invalid_mode_label`). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent import model
from agent.calc import ruleset

LABEL = "podseg.io/mode"
_MODES = {m.value: m for m in ruleset.PolicyMode}


def resolve(
    pod: model.Pod, namespaces: Mapping[str, model.Namespace]
) -> tuple[ruleset.PolicyMode, str | None]:
    """(mode, the invalid label value if one was ignored, else None)."""
    value = pod.labels.get(LABEL)
    if value is None:
        ns = namespaces.get(pod.namespace)
        value = ns.labels.get(LABEL) if ns is not None else None
    if value is None:
        return ruleset.PolicyMode.ENFORCE, None
    mode = _MODES.get(value.strip().lower())
    if mode is None:
        return ruleset.PolicyMode.ENFORCE, value
    return mode, None
