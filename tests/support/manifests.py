"""The deploy/ bases as the manifest tests render them (with tests/support/kustomize.py), one
object picked out of a rendering, and every metric series name the agent can export."""

from __future__ import annotations

import pathlib
from typing import Any

from agent import metrics

ROOT = pathlib.Path(__file__).resolve().parents[2]


DEPLOY = ROOT / "deploy"


BASES = {
    "base": DEPLOY,
    "monitoring": DEPLOY / "monitoring",
    "cleanup": DEPLOY / "cleanup",
    "responder": DEPLOY / "responder",
}


EXTRA_FILES = [DEPLOY / "monitoring" / "podmonitor.yaml"]  # the PodMonitor alternative


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    hits = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def exported_names() -> set[str]:
    """Every series name the registry can export (a labelled family has no sample until used)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, ()))
    return names
