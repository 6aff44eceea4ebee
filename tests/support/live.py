"""A live sandbox cluster with real agent processes: the upstream network-policy model
(namespaces x, y, z; pods a, b, c) with its convergence check, the `--backend` arguments of a
fixture parametrized over both dataplane backends, the agent's metric samples, and `Env`, one
namespace's pods with probe verdicts."""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from typing import Any

import prometheus_client.parser
import pytest

from agent import config
from agent.calc import explain as calc_explain
from agent.commands import explain as explain_command
from agent.k8s import clients, snapshot
from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import probe
from tests.support import reachability
from tests.support.polling import wait_for

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
                self.explain_agrees(verdicts, family)
                return
            if time.monotonic() > deadline:
                shown = "\n".join(diff[:40])
                pytest.fail(f"{len(diff)} unexpected verdicts after {timeout}s:\n{shown}")

    def explain_agrees(
        self, verdicts: Mapping[tuple[str, str, int, str], str], family: int
    ) -> None:
        """`podseg explain`, from the API alone, gives every probed pair the verdict the live
        probe saw (ok = allowed; timeout = denied)."""
        api = clients.api_client(self.cluster.kubeconfig)
        try:
            snapshot_now = snapshot.load(api)
        finally:
            api.close()
        wrong = []
        for (src, dst, port, proto), seen in sorted(verdicts.items()):
            found = explain_command.explain(
                snapshot_now,
                src,
                self.ip(dst, family),
                port,
                proto.upper(),
                config.Settings("", None),
            )
            if (found.verdict == calc_explain.ALLOWED) != (seen == "ok"):
                wrong.append(
                    f"{src} -> {dst} {port}/{proto}: probe {seen}, explain {found.verdict}"
                )
        assert not wrong, "explain disagrees with the live probes:\n" + "\n".join(wrong[:20])

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


def sample(agent: sandbox_cluster.AgentProcess, name: str, **labels: str) -> float | None:
    status, text = agent.http("/metrics")
    assert status == 200
    for family in prometheus_client.parser.text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


class Env:
    def __init__(self, cluster: sandbox_cluster.SandboxCluster) -> None:
        self.cluster = cluster

    @property
    def agent(self) -> sandbox_cluster.AgentProcess:
        return self.cluster.agents["node-1"]

    def verdict(self, src: str, dst: str, port: int = 80, proto: str = "tcp") -> str:
        pods = self.cluster.pods
        return probe.probe(pods[src], pods[dst].ipv4, port, proto, timeout=0.8)

    def wait_verdict(self, src: str, dst: str, want: str, timeout: float = 20.0) -> None:
        wait_for(
            lambda: self.verdict(src, dst) == want, timeout=timeout, what=f"{src}->{dst} {want}"
        )

    def deny_a(self, name: str = "deny-a") -> None:
        self.cluster.apply_policy(
            {
                "metadata": {"namespace": "t", "name": name},
                "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"]},
            }
        )
