"""The rendered deploy/ bases, once per session, for the manifest tests."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import kustomize
from tests.support.manifests import BASES


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: kustomize.render(path) for name, path in BASES.items()}
