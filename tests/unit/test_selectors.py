"""Label selector semantics (matchLabels AND matchExpressions, fail closed on malformed)."""

from __future__ import annotations

import pytest

from agent import model, selectors

Req = model.SelectorRequirement
Sel = model.LabelSelector


def test_empty_selector_matches_everything() -> None:
    assert selectors.matches(Sel(), {})
    assert selectors.matches(Sel(), {"a": "b"})


def test_match_labels_all_must_hold() -> None:
    sel = Sel(match_labels=(("app", "web"), ("tier", "fe")))
    assert selectors.matches(sel, {"app": "web", "tier": "fe", "x": "y"})
    assert not selectors.matches(sel, {"app": "web"})
    assert not selectors.matches(sel, {"app": "web", "tier": "be"})


def test_match_label_with_empty_value_needs_the_key() -> None:
    sel = Sel(match_labels=(("flag", ""),))
    assert selectors.matches(sel, {"flag": ""})
    assert not selectors.matches(sel, {})


@pytest.mark.parametrize(
    ("req", "labels", "expected"),
    [
        (Req("env", "In", ("prod", "stg")), {"env": "prod"}, True),
        (Req("env", "In", ("prod", "stg")), {"env": "dev"}, False),
        (Req("env", "In", ("prod",)), {}, False),
        (Req("env", "NotIn", ("prod",)), {"env": "dev"}, True),
        (Req("env", "NotIn", ("prod",)), {"env": "prod"}, False),
        (Req("env", "NotIn", ("prod",)), {}, True),  # absent key satisfies NotIn
        (Req("env", "Exists"), {"env": ""}, True),
        (Req("env", "Exists"), {"other": "x"}, False),
        (Req("env", "DoesNotExist"), {}, True),
        (Req("env", "DoesNotExist"), {"env": "x"}, False),
    ],
)
def test_operators(req: model.SelectorRequirement, labels: dict[str, str], expected: bool) -> None:
    assert selectors.matches(Sel(match_expressions=(req,)), labels) is expected


@pytest.mark.parametrize(
    "req",
    [
        Req("env", "Bogus", ("x",)),
        Req("env", "in", ("x",)),  # operators are case-sensitive
        Req("env", "In", ()),
        Req("env", "NotIn", ()),
        Req("env", "Exists", ("x",)),
        Req("env", "DoesNotExist", ("x",)),
    ],
)
def test_malformed_requirement_matches_nothing(req: model.SelectorRequirement) -> None:
    labels = {"env": "x"}
    assert not selectors.matches(Sel(match_expressions=(req,)), labels)
    assert not selectors.matches(Sel(match_expressions=(req,)), {})


def test_labels_and_expressions_are_anded() -> None:
    sel = Sel(
        match_labels=(("app", "web"),),
        match_expressions=(Req("env", "In", ("prod",)), Req("canary", "DoesNotExist")),
    )
    assert selectors.matches(sel, {"app": "web", "env": "prod"})
    assert not selectors.matches(sel, {"app": "web", "env": "prod", "canary": "1"})
    assert not selectors.matches(sel, {"app": "db", "env": "prod"})
    assert not selectors.matches(sel, {"app": "web"})
