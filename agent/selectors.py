"""Kubernetes label-selector matching, shared by policy selection and peer resolution.

Kept apart from the compiler because selector semantics are subtle (NotIn matches an absent
key, the empty selector matches everything) and are easiest to get right and test in one place.
Anything the API would have rejected (unknown operator, In/NotIn without values,
Exists/DoesNotExist with values) makes the selector match nothing: a broken selector must never
widen a policy.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent import model

IN = "In"
NOT_IN = "NotIn"
EXISTS = "Exists"
DOES_NOT_EXIST = "DoesNotExist"


def requirement_matches(req: model.SelectorRequirement, labels: Mapping[str, str]) -> bool:
    """Whether one `matchExpressions` entry holds for `labels` (malformed -> False)."""
    if req.operator == IN:
        return bool(req.values) and req.key in labels and labels[req.key] in req.values
    if req.operator == NOT_IN:
        return bool(req.values) and (req.key not in labels or labels[req.key] not in req.values)
    if req.operator == EXISTS:
        return not req.values and req.key in labels
    if req.operator == DOES_NOT_EXIST:
        return not req.values and req.key not in labels
    return False


def matches(selector: model.LabelSelector, labels: Mapping[str, str]) -> bool:
    """Whether `labels` satisfy every matchLabels pair and every matchExpressions entry."""
    for key, value in selector.match_labels:
        if labels.get(key) != value:
            return False
    return all(requirement_matches(req, labels) for req in selector.match_expressions)
