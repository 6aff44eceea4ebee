"""The e2e fixtures: the upstream netpol model (namespaces x, y, z; pods a, b, c) on one sandbox
node with the emulator and a real `podseg agent` process, once per dataplane backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbed.sandbox import cluster as sandbox_cluster
from tests.support.live import BACKENDS, NAMESPACES, PODS, Model, backend_args


@pytest.fixture(scope="module", params=BACKENDS)
def model_cluster(request: pytest.FixtureRequest) -> Iterator[Model]:
    """The model cluster, once per dataplane backend: every conformance case runs on both."""
    args = backend_args(request)  # skips the iptables run without its tools
    with sandbox_cluster.SandboxCluster(nodes=("node-1",)) as cluster:
        for ns in NAMESPACES:
            cluster.ensure_namespace(ns, {"ns": ns})
        for ns in NAMESPACES:
            for name in PODS:
                cluster.add_pod(ns, name, {"pod": name})
        cluster.start_agent("node-1", args)
        yield Model(cluster)


@pytest.fixture
def model(model_cluster: Model) -> Iterator[Model]:
    """A clean model: no policies, original labels, everything reachable."""
    model_cluster.reset()
    model_cluster.converge(model_cluster.reach(True))
    yield model_cluster
