"""Selector parsing and matching in isolation."""

from __future__ import annotations

import pytest

from testbed.emulator import queryselectors

LABELS = {"app": "web", "tier": "fe", "replicas": "3"}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("app=web", True),
        ("app = web , tier==fe", True),
        ("app!=web", False),
        ("missing!=x", True),
        ("app in (db, web)", True),
        ("app notin (db,web)", False),
        ("missing notin (a)", True),
        ("tier", True),
        ("!tier", False),
        ("!missing", True),
        ("replicas>2", True),
        ("replicas<2", False),
        ("example.com/key=v", False),
        ("app=", False),
    ],
)
def test_label_selector(text: str, matches: bool) -> None:
    assert queryselectors.parse_label_selector(text).matches(LABELS) is matches


@pytest.mark.parametrize(
    "text", ["app in (", "app in ()", "=x", "app=web,", "app==a=b", "Bad Key=x", "app=a b"]
)
def test_label_selector_errors(text: str) -> None:
    with pytest.raises(queryselectors.SelectorError):
        queryselectors.parse_label_selector(text)


def test_field_selector_escapes_and_negation() -> None:
    sel = queryselectors.parse_field_selector(r"metadata.name=a\,b,spec.nodeName!=n1")
    assert sel.matches({"metadata.name": "a,b", "spec.nodeName": "n2"})
    assert not sel.matches({"metadata.name": "a,b", "spec.nodeName": "n1"})
    assert sel.fields() == {"metadata.name", "spec.nodeName"}
    with pytest.raises(queryselectors.SelectorError):
        queryselectors.parse_field_selector("justakey")
