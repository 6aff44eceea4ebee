"""Rendered deploy/ bases shared by the manifest tests."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from tests.deploy import kustomize

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASES = {
    "base": DEPLOY,
    "monitoring": DEPLOY / "monitoring",
    "cleanup": DEPLOY / "cleanup",
    "responder": DEPLOY / "responder",
}
EXTRA_FILES = [DEPLOY / "monitoring" / "podmonitor.yaml"]  # the PodMonitor alternative


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: kustomize.render(path) for name, path in BASES.items()}


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    hits = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]
