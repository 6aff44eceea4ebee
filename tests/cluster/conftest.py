"""Fixtures of the real-cluster tier (`bash scripts/test.sh --cluster`).

The cluster is the one `bash scripts/cluster.sh up` starts (a real kube-apiserver, kubelet,
containerd and kube-proxy; see scripts/cluster/README.md). When it is not up these tests skip,
saying so; `scripts/test.sh` brings it up itself and sets PSG_CLUSTER_REQUIRED=1, which turns
that skip into a failure. podseg is installed once per session the way README's install
section says, from the image this checkout builds (`podseg` fixture).

The agent of this cluster sees only the node's processes (the node has its own PID
namespace), so this tier cannot touch other tiers' sandbox namespaces; it still runs after
them in `scripts/test.sh` (docs/development.md).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.cluster import support


def _unavailable(reason: str) -> None:
    """Skip, saying why; fail instead where the cluster must be there (scripts/test.sh sets
    PSG_CLUSTER_REQUIRED=1; CI=true is the suite's CI guard, tests/conftest.py)."""
    if os.environ.get("PSG_CLUSTER_REQUIRED") == "1" or os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (PSG_CLUSTER_REQUIRED=1 or CI=true)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def kube() -> support.Kube:
    if os.geteuid() != 0:
        _unavailable("the cluster tier needs root (the test cluster and its namespaces)")
    config = support.Config.load()
    if not pathlib.Path(config.kubectl).is_file():
        _unavailable("the test cluster is not built: bash scripts/cluster.sh up")
    client = support.Kube(config)
    if not client.ready():
        _unavailable("the test cluster is not up: bash scripts/cluster.sh up")
    return client


@pytest.fixture(scope="session")
def image(kube: support.Kube) -> str:
    """The podseg image built from this checkout, imported into the cluster's containerd."""
    return support.build_image()


@pytest.fixture(scope="session")
def overlays(image: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    return support.write_overlays(tmp_path_factory.mktemp("overlays"), image)


@pytest.fixture(scope="session")
def podseg(kube: support.Kube, overlays: dict[str, pathlib.Path]) -> dict[str, pathlib.Path]:
    """podseg installed: README's commands with `deploy/` being the overlay."""
    support.remember_conflist(kube.config)
    for command in support.install_commands(overlays):
        kube.run(*command, *(["--timeout=180s"] if "rollout" in command else []))
    return overlays


@pytest.fixture
def namespace(kube: support.Kube) -> Iterator[Callable[..., str]]:
    """A factory of fresh namespaces (deleted, without waiting, at the end of the test)."""
    made: list[str] = []

    def make(prefix: str, labels: dict[str, Any] | None = None) -> str:
        name = support.create_namespace(kube, support.namespace_name(prefix), labels)
        made.append(name)
        return name

    yield make
    for name in made:
        kube.run("delete", "namespace", name, "--wait=false", check=False)
