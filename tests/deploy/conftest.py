"""The rendered deploy/ bases, once per session, for the manifest tests."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import contract, kustomize
from tests.support.manifests import BASES


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every base's objects; their ConfigMaps are what `contract.parse_args` reads a
    container's `configMapKeyRef` env from, whichever test runs first."""
    bases = {name: kustomize.render(path) for name, path in BASES.items()}
    contract.CONFIGMAPS.update(
        {
            o["metadata"]["name"]: o["data"]
            for objs in bases.values()
            for o in objs
            if o["kind"] == "ConfigMap"
        }
    )
    return bases
