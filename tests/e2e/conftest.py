"""The e2e fixture: the upstream netpol model (namespaces x, y, z; pods a, b, c) on one sandbox
node, with the emulator and a real `podseg agent` process, plus a convergence helper."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import probe
from tests.e2e import reachability

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
POD_KEYS = [f"{ns}/{p}" for ns in NAMESPACES for p in PODS]
PROBE_TIMEOUT = 0.8


class Model:
    """The running model cluster and the operations the conformance cases need."""

    def __init__(self, cluster: sandbox_cluster.SandboxCluster) -> None:
        self.cluster = cluster

    def pods(self) -> list[Any]:
        return [self.cluster.pods[key] for key in POD_KEYS]

    def ip(self, key: str, family: int = 4) -> str:
        pod = self.cluster.pods[key]
        return str(pod.ipv4 if family == 4 else pod.ipv6)

    def reach(self, default: bool = True) -> reachability.Reachability:
        return reachability.Reachability(POD_KEYS, default=default)

    def policy(self, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
        self.cluster.apply_policy(
            {"metadata": {"namespace": namespace, "name": name}, "spec": spec}
        )

    def converge(
        self, expected: reachability.Reachability, *, timeout: float = 20.0, family: int = 4
    ) -> None:
        """Probe until the matrix equals `expected` or the deadline passes (then fail)."""
        deadline = time.monotonic() + timeout
        while True:
            verdicts = probe.probe_matrix(
                self.pods(),
                family=family,
                timeout=PROBE_TIMEOUT,
                ports=expected.ports,
                protocols=expected.protocols,
            )
            diff = reachability.differences(expected.expected, verdicts)
            if not diff:
                return
            if time.monotonic() > deadline:
                shown = "\n".join(diff[:40])
                pytest.fail(f"{len(diff)} unexpected verdicts after {timeout}s:\n{shown}")

    def reset(self) -> None:
        self.cluster.delete_all_policies()
        for ns in NAMESPACES:
            self.cluster.core.replace_namespace(
                ns,
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": ns, "labels": {"ns": ns}},
                },
            )
        for key in POD_KEYS:
            ns, name = key.split("/")
            body = self.cluster.core.read_namespaced_pod(name, ns)
            body.metadata.labels = {"pod": name}
            self.cluster.core.replace_namespaced_pod(name, ns, body)


BACKENDS = ("nftables", "iptables")


def backend_args(request: pytest.FixtureRequest) -> list[str]:
    """`--backend <param>` for a module fixture parametrized over BACKENDS; skips the
    iptables run when its tools are missing."""
    backend = str(request.param)
    if backend == "iptables" and not all(
        shutil.which(t) for t in ("iptables-restore", "ip6tables-restore", "ipset")
    ):
        pytest.skip("needs iptables-restore, ip6tables-restore and ipset (scripts/setup.sh)")
    return ["--backend", backend]


@pytest.fixture(scope="module", params=BACKENDS)
def model_cluster(request: pytest.FixtureRequest) -> Iterator[Model]:
    """The model cluster, once per dataplane backend: every conformance case runs on both."""
    backend = str(request.param)
    if backend == "iptables" and not all(
        shutil.which(t) for t in ("iptables-restore", "ip6tables-restore", "ipset")
    ):
        pytest.skip("needs iptables-restore, ip6tables-restore and ipset (scripts/setup.sh)")
    with sandbox_cluster.SandboxCluster(nodes=("node-1",)) as cluster:
        for ns in NAMESPACES:
            cluster.ensure_namespace(ns, {"ns": ns})
        for ns in NAMESPACES:
            for name in PODS:
                cluster.add_pod(ns, name, {"pod": name})
        cluster.start_agent("node-1", ["--backend", backend])
        yield Model(cluster)


@pytest.fixture
def model(model_cluster: Model) -> Iterator[Model]:
    """A clean model: no policies, original labels, everything reachable."""
    model_cluster.reset()
    model_cluster.converge(model_cluster.reach(True))
    yield model_cluster
