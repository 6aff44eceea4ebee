"""podseg-cni end to end: the plugin binary driven exactly like a container runtime (CNI env and
stdin with prevResult) on real sandbox pod namespaces, against a real `podseg agent` serving
its CNI socket, with real TCP probes.

A new pod here is what a runtime makes: its namespace exists (with the bridge plugin's address)
and the API has the pod object (labels, node) but no IP yet; the IP is only reported after ADD.
"""

from __future__ import annotations

import pathlib
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import cniplugin, podclient, topology
from tests.support.live import BACKENDS, backend_args, sample
from tests.support.polling import wait_for

NODE = "node-1"
NS = "x"
PROBE_TIMEOUT = 0.8


class Env:
    def __init__(
        self, cluster: sandbox_cluster.SandboxCluster, binary: pathlib.Path, extra: list[str]
    ) -> None:
        self.cluster, self.binary, self.extra = cluster, binary, extra
        self.socket = str(cluster.workdir / "cni.sock")
        self.server = cluster.add_pod(NS, "server", {"app": "server"})
        self.dns = cluster.add_pod("kube-system", "dns", {"k8s-app": "dns"}, serve=[53, 80])
        node = cluster.nodes[NODE]
        self.node_process = cluster.sandbox.serve_on_node(node, [8081])
        self.count = 0

    @property
    def agent(self) -> sandbox_cluster.AgentProcess:
        return self.cluster.agents[NODE]

    def start_agent(self) -> None:
        if NODE not in self.cluster.agents or not self.agent.running:
            args = ["--cni-socket", self.socket, *self.extra]
            self.cluster.start_agent(NODE, args)

    def stop_agent(self) -> None:
        if NODE in self.cluster.agents and self.agent.running:
            self.agent.stop()

    def new_pod(self) -> topology.SandboxPod:
        """A sandbox whose pod object exists in the API without an IP (before ADD)."""
        self.count += 1
        name = f"new{self.count}"
        pod = self.cluster.sandbox.add_pod(self.cluster.nodes[NODE], NS, name)
        self.cluster.pods[f"{NS}/{name}"] = pod
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": "new"}},
            "spec": {
                "nodeName": NODE,
                "containers": [{"name": "c", "image": "podseg/probe", "ports": []}],
            },
        }
        self.cluster.core.create_namespaced_pod(NS, body)
        return pod

    def programmed(self, pod: topology.SandboxPod) -> bool:
        """Whether the agent's own rules are in the pod's namespace (either backend)."""
        if "--backend" in self.extra and self.extra[-1] == "iptables":
            saved = subprocess.run(
                ["nsenter", f"--net={pod.netns_path}", "iptables-save"],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout
            return "PODSEG-" in saved
        return "inet podseg" in cniplugin.tables(pod.netns_path)

    def pending(self, pod: topology.SandboxPod) -> bool:
        return "inet podseg-pending" in cniplugin.tables(pod.netns_path)

    def report_ips(self, pod: topology.SandboxPod) -> None:
        """What the kubelet does once ADD succeeded."""
        ips = [pod.ipv4] + ([pod.ipv6] if pod.ipv6 else [])
        status = {"phase": "Running", "podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips]}
        self.cluster.core.patch_namespaced_pod_status(pod.name, NS, {"status": status})

    def conf(self, pod: topology.SandboxPod | None, **keys: Any) -> dict[str, Any]:
        prev = cniplugin.prev_result(pod, self.cluster.nodes[NODE]) if pod else None
        keys.setdefault("agentSocket", self.socket)
        keys.setdefault("clusterDNS", [self.dns.ipv4])
        keys.setdefault("timeoutMs", 10000)
        return cniplugin.network_config(prev, **keys)

    def plugin(self, command: str, pod: topology.SandboxPod, **keys: Any) -> cniplugin.Outcome:
        return cniplugin.run(
            self.binary,
            command,
            self.conf(pod, **keys),
            netns=pod.netns_path,
            container_id=uuid.uuid4().hex,
            pod=(pod.namespace, pod.name),
        )


def verdict(src: topology.SandboxPod | podclient.PodProcess, dst: str, port: int) -> str:
    process = src if isinstance(src, podclient.PodProcess) else src.process
    assert process is not None
    probes = [{"dst": dst, "port": port, "proto": "tcp", "timeout": PROBE_TIMEOUT}]
    answer = process.request({"probes": probes}, PROBE_TIMEOUT + 10)
    return str(answer["results"][0]["verdict"])


@pytest.fixture(scope="module", params=BACKENDS)
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """Once per dataplane backend: each replaces the pending table its own way."""
    extra = backend_args(request)
    if not cniplugin.go_available():
        pytest.skip("Go is not installed (scripts/setup.sh installs it)")
    binary = cniplugin.build(tmp_path_factory.mktemp("cni-bin"))
    with sandbox_cluster.SandboxCluster(nodes=(NODE,)) as cluster:
        cluster.ensure_namespace(NS, {"ns": NS})
        env = Env(cluster, binary, extra)
        # New pods may reach the server on port 80 only; nothing may reach them.
        cluster.apply_policy(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "new-pods", "namespace": NS},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "new"}},
                    "policyTypes": ["Ingress", "Egress"],
                    "egress": [
                        {
                            "to": [{"podSelector": {"matchLabels": {"app": "server"}}}],
                            "ports": [{"protocol": "TCP", "port": 80}],
                        }
                    ],
                },
            }
        )
        env.start_agent()
        yield env


def test_add_returns_with_the_real_ruleset_in_place(env: Env) -> None:
    env.start_agent()
    pod = env.new_pod()
    outcome = env.plugin("ADD", pod)
    assert outcome.code == 0, outcome.stderr
    # prevResult passes through unchanged
    assert outcome.json() == cniplugin.prev_result(pod, env.cluster.nodes[NODE])
    assert env.programmed(pod) and not env.pending(pod)
    assert verdict(pod, env.server.ipv4, 80) == "ok"  # allowed by the policy
    assert verdict(pod, env.server.ipv4, 81) != "ok"  # denied
    assert verdict(env.server, pod.ipv4, 80) != "ok"  # ingress denied
    programmed = sample(env.agent, "podseg_cni_requests_total", result="programmed")
    assert programmed is not None and programmed >= 1
    assert sample(env.agent, "podseg_pods_pending") == 0
    # never unprotected: its first ruleset replaced the pending one
    assert sample(env.agent, "podseg_pod_unprotected_seconds_bucket", le="0.0") == sample(
        env.agent, "podseg_pod_unprotected_seconds_count"
    )


def test_fail_closed_without_agent_then_the_agent_replaces_pending(env: Env) -> None:
    env.stop_agent()
    pod = env.new_pod()
    outcome = env.plugin("ADD", pod, timeoutMs=300)
    assert outcome.code == 0, outcome.stderr
    assert "fail-closed" in outcome.stderr
    assert outcome.json() == cniplugin.prev_result(pod, env.cluster.nodes[NODE])
    assert env.pending(pod) and not env.programmed(pod)
    # The allow-list while pending: DNS to the cluster DNS address, packets from the node.
    assert verdict(pod, env.dns.ipv4, 53) == "ok"
    assert verdict(env.node_process, pod.ipv4, 80) == "ok"
    assert verdict(pod, env.dns.ipv4, 80) != "ok"
    assert verdict(pod, env.server.ipv4, 80) != "ok"
    assert verdict(env.server, pod.ipv4, 80) != "ok"
    # The runtime goes on, the kubelet reports the IP; the agent comes back.
    env.report_ips(pod)
    env.start_agent()

    def replaced() -> bool:
        return env.programmed(pod) and not env.pending(pod)

    wait_for(replaced, timeout=30, what="the real ruleset replacing the pending table")
    assert verdict(pod, env.server.ipv4, 80) == "ok"
    assert verdict(pod, env.server.ipv4, 81) != "ok"


def test_fail_open_removes_pending(env: Env) -> None:
    env.stop_agent()
    pod = env.new_pod()
    outcome = env.plugin("ADD", pod, timeoutMs=300, failOpen=True)
    assert outcome.code == 0, outcome.stderr
    assert "fail-open" in outcome.stderr
    assert outcome.json() == cniplugin.prev_result(pod, env.cluster.nodes[NODE])
    assert not env.pending(pod) and not env.programmed(pod)
    assert verdict(pod, env.server.ipv4, 81) == "ok"  # unprotected, as configured


def test_del_removes_only_a_pending_table(env: Env) -> None:
    env.start_agent()
    programmed = env.new_pod()
    assert env.plugin("ADD", programmed).code == 0
    outcome = env.plugin("DEL", programmed)
    assert outcome.code == 0, outcome.stderr
    assert env.programmed(programmed)  # the agent's rules stay
    env.stop_agent()
    pending = env.new_pod()
    assert env.plugin("ADD", pending, timeoutMs=200).code == 0
    assert env.pending(pending)
    assert env.plugin("DEL", pending).code == 0
    assert not env.pending(pending)
    assert env.plugin("DEL", pending).code == 0  # DEL is idempotent
    gone = cniplugin.run(env.binary, "DEL", env.conf(None), netns="", container_id="c")
    assert gone.code == 0, gone.stderr  # no namespace any more: nothing to do


def test_version_and_check(env: Env) -> None:
    version = cniplugin.run(env.binary, "VERSION", {"cniVersion": "1.0.0"})
    assert version.code == 0, version.stderr
    assert "1.0.0" in version.json()["supportedVersions"]
    pod = env.new_pod()
    check = env.plugin("CHECK", pod)
    assert check.code == 0, check.stdout + check.stderr
    bad = cniplugin.run(env.binary, "CHECK", env.conf(None), netns=pod.netns_path, container_id="c")
    assert bad.code != 0
    assert "prevResult" in bad.json()["msg"]
