"""Visibility before enforcement, end to end: real connections between pods on two sandbox
nodes are sampled in the kernel (allowed and dropped), kept as workload flows in each agent's
flow store, and `podseg flows` (the real CLI, a subprocess) gathers them into one graph with
the right workloads, ports and verdicts, each allowed connection counted once. The store
survives an agent restart; an agent whose store cannot be opened keeps enforcing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import probe
from tests.support import live
from tests.support.polling import wait_for

NS = "fs"
EXTERNAL = "198.19.77.5"  # in the sandbox range, held by no pod: an "external" peer
NODES = ("node-1", "node-2", "node-3")
UNWRITABLE = "/proc/podseg-flows/flows.sqlite"  # no directory can be made under /proc


class Env:
    def __init__(self, cluster: sandbox_cluster.SandboxCluster) -> None:
        self.cluster = cluster

    def url(self, node: str) -> str:
        return f"http://127.0.0.1:{self.cluster.agents[node].metrics_port}"

    def probe(self, src: str, dst: str, port: int = 80) -> str:
        pods = self.cluster.pods
        target = pods[f"{NS}/{dst}"].ipv4 if f"{NS}/{dst}" in pods else dst
        return probe.probe(pods[f"{NS}/{src}"], target, port, "tcp", timeout=0.5)

    def cli(
        self, *args: str, nodes: tuple[str, ...] = NODES[:2]
    ) -> subprocess.CompletedProcess[str]:
        agents = [a for node in nodes for a in ("--agent", self.url(node))]
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "agent",
                "flows",
                "--kubeconfig",
                self.cluster.kubeconfig,
                *agents,
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def graph(self, *args: str) -> dict[str, Any]:
        done = self.cli("-o", "json", *args)
        assert done.returncode == 0, done.stderr
        doc: dict[str, Any] = json.loads(done.stdout)
        return doc


def owned(cluster: sandbox_cluster.SandboxCluster, name: str, kind: str, owner: str) -> None:
    reference = {
        "apiVersion": "apps/v1",
        "kind": kind,
        "name": owner,
        "uid": f"uid-{owner}",
        "controller": True,
    }
    cluster.core.patch_namespaced_pod(name, NS, {"metadata": {"ownerReferences": [reference]}})


@pytest.fixture(scope="module", params=live.BACKENDS)
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    args = ["--flow-window", "0.5", *live.backend_args(request)]
    with sandbox_cluster.SandboxCluster(nodes=NODES) as cluster:
        cluster.ensure_namespace(NS, {"team": "shop"})
        web = {"app": "web", "pod-template-hash": "5d8f"}
        cluster.add_pod(NS, "web-5d8f-a", web, node="node-1")
        cluster.add_pod(NS, "web-5d8f-b", web, node="node-2")
        cluster.add_pod(NS, "db-0", {"app": "db"}, node="node-2")
        cluster.add_pod(NS, "debug", {"run": "debug"}, node="node-1")
        owned(cluster, "web-5d8f-a", "ReplicaSet", "web-5d8f")
        owned(cluster, "web-5d8f-b", "ReplicaSet", "web-5d8f")
        owned(cluster, "db-0", "StatefulSet", "db")
        for node in NODES[:2]:
            cluster.start_agent(node, args)
        cluster.start_agent("node-3", ["--flow-store", UNWRITABLE, *args])
        yield Env(cluster)


def _flows(doc: dict[str, Any], **match: Any) -> list[dict[str, Any]]:
    return [f for f in doc["flows"] if all(f.get(k) == v for k, v in match.items())]


WEB = {"namespace": NS, "workload": "web"}
DB = {"namespace": NS, "workload": "db"}
DEBUG = {"namespace": NS, "workload": "debug"}


def test_flows_are_sampled_stored_and_gathered_into_one_graph(env: Env) -> None:
    cluster = env.cluster
    cluster.apply_policy(
        {
            "metadata": {"namespace": NS, "name": "db-from-web"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "db"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                        "ports": [{"protocol": "TCP", "port": 80}],
                    }
                ],
            },
        }
    )
    wait_for(lambda: env.probe("debug", "db-0") == probe.TIMEOUT, timeout=20, what="db isolated")
    # web's egress is isolated too (everything allowed): its side samples every connection,
    # and only the destination's ingress may count one that reaches a pod
    cluster.apply_policy(
        {
            "metadata": {"namespace": NS, "name": "web-out"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Egress"],
                "egress": [{}],
            },
        }
    )

    def web_egress_programmed() -> bool:
        found = env.cluster.agents["node-1"].http(f"/podseg/v1/pods/{NS}/web-5d8f-a")
        return found[0] == 200 and json.loads(found[1])["egress_policies"] == [f"{NS}/web-out"]

    wait_for(web_egress_programmed, timeout=20, what="web's egress policy programmed")
    for _ in range(3):
        assert env.probe("web-5d8f-a", "db-0") == probe.OK
    assert env.probe("web-5d8f-b", "db-0") == probe.OK
    for _ in range(2):
        assert env.probe("web-5d8f-a", "db-0", 81) == probe.TIMEOUT
    assert env.probe("web-5d8f-a", EXTERNAL, 443) != probe.OK  # allowed, nobody there

    def gathered() -> dict[str, Any] | None:
        doc = env.graph()
        wanted = (
            _flows(doc, src=WEB, dst=DB, port=80, verdict="allowed"),
            _flows(doc, src=WEB, dst=DB, port=81, verdict="dropped"),
            _flows(doc, src=DEBUG, dst=DB, port=80, verdict="dropped"),
            _flows(doc, src=WEB, dst={"external": "198.19.77.0/24"}, port=443),
        )
        ok = all(wanted) and wanted[0][0]["count"] >= 4 and wanted[1][0]["count"] >= 2
        return doc if ok else None

    doc = wait_for(gathered, timeout=30, interval=0.5, what="flows gathered by podseg flows")
    assert doc["kind"] == "FlowGraph" and doc["apiVersion"] == "podseg.io/v1"
    (allowed,) = _flows(doc, src=WEB, dst=DB, port=80, verdict="allowed")
    # four connections from the two web pods, counted once each, at db's ingress (node-2)
    assert allowed["count"] == 4 and allowed["protocol"] == "TCP"
    assert allowed["nodes"] == ["node-2"]
    (dropped,) = _flows(doc, src=WEB, dst=DB, port=81, verdict="dropped")
    assert dropped["nodes"] == ["node-2"]
    (external,) = _flows(doc, src=WEB, dst={"external": "198.19.77.0/24"}, port=443)
    assert (external["verdict"], external["count"], external["nodes"]) == (
        "allowed",
        1,
        ["node-1"],
    )
    workloads = {w["name"]: w for w in doc["workloads"] if w["namespace"] == NS}
    assert workloads["web"]["kind"] == "Deployment"
    assert workloads["web"]["labels"] == {"app": "web"}
    assert {"name": "serve-80-tcp", "port": 80, "protocol": "TCP"} in workloads["web"]["ports"]
    assert workloads["db"]["kind"] == "StatefulSet" and workloads["debug"]["kind"] == "Pod"
    assert doc["namespaces"][NS]["team"] == "shop"
    assert {p["metadata"]["name"] for p in doc["policies"]} == {"db-from-web", "web-out"}

    # filters, and the table
    only_dropped = env.graph("--verdict", "dropped", "-n", NS, "--since", "1h")
    assert only_dropped["flows"] and {f["verdict"] for f in only_dropped["flows"]} == {"dropped"}
    table = env.cli("-o", "table", "--verdict", "allowed")
    assert table.returncode == 0, table.stderr
    assert any(
        line.split()[:5] == [f"{NS}/web", f"{NS}/db", "TCP", "80", "allowed"]
        for line in table.stdout.splitlines()
    )

    # an agent that does not answer, one without a store: warnings, the rest is gathered
    closed = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "flows",
            "--kubeconfig",
            cluster.kubeconfig,
            "--agent",
            env.url("node-2"),
            "--agent",
            env.url("node-3"),
            "--agent",
            "http://127.0.0.1:9",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert closed.returncode == 0, closed.stderr
    warnings = closed.stderr.strip().splitlines()
    assert len(warnings) == 2 and all(w.startswith("warning: agent of node") for w in warnings)
    assert any("keeps no flow store" in w for w in warnings)
    assert _flows(json.loads(closed.stdout), src=WEB, dst=DB, port=80, verdict="allowed")

    # unknown namespace: one line, exit 2
    unknown = env.cli("-n", "no-such-ns")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "podseg flows: namespace 'no-such-ns' not found"

    # the store survives a restart of the agent
    agent = cluster.agents["node-2"]
    agent.stop()
    cluster.start_agent("node-2")
    again = env.graph("--verdict", "allowed")
    (kept,) = _flows(again, src=WEB, dst=DB, port=80)
    assert kept["count"] >= 4 and kept["first_seen"] == allowed["first_seen"]


def test_an_agent_whose_store_cannot_be_opened_keeps_enforcing(env: Env) -> None:
    agent = env.cluster.agents["node-3"]
    assert agent.ready()
    unavailable = agent.events("flow_store_unavailable")
    assert len(unavailable) == 1 and unavailable[0]["path"] == UNWRITABLE
    assert live.sample(agent, "podseg_flow_store_errors_total", op="open") == 1
    status, body = agent.http("/podseg/v1/flows")
    assert status == 503 and "no flow store" in json.loads(body)["error"]
