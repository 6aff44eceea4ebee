"""Drop capture end to end: NFLOG inside real pod namespaces, the flow log, the drop metrics
scraped by a real Prometheus, and visibility mode, each checked with live probes."""

from __future__ import annotations

import json
import pathlib
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import prometheus_client.parser
import pytest

from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import probe
from tests.support import live, prom
from tests.support.polling import wait_for

NS = "fl"
EXTERNAL = "198.19.77.5"  # in the sandbox range, held by no pod: an "external" peer


class Env:
    def __init__(
        self, cluster: sandbox_cluster.SandboxCluster, flow_log: pathlib.Path, server: Any
    ) -> None:
        self.cluster = cluster
        self.flow_log = flow_log
        self.prom: prom.Prometheus = server

    @property
    def agent(self) -> sandbox_cluster.AgentProcess:
        return self.cluster.agents["node-1"]

    def probe(self, src: str, dst: str, port: int = 80, proto: str = "tcp") -> str:
        pods = self.cluster.pods
        target = pods[dst].ipv4 if dst in pods else dst
        return probe.probe(pods[src], target, port, proto, timeout=0.5)

    def wait_probe(self, src: str, dst: str, want: str, proto: str = "tcp") -> None:
        wait_for(
            lambda: self.probe(src, dst, proto=proto) == want,
            timeout=20,
            what=f"{src}->{dst} {proto} {want}",
        )

    def flows(self, **match: Any) -> list[dict[str, Any]]:
        if not self.flow_log.exists():
            return []
        out = []
        for line in self.flow_log.read_text().splitlines():
            entry = json.loads(line)
            if all(_get(entry, k) == v for k, v in match.items()):
                out.append(entry)
        return out

    def metric(self, name: str, **labels: str) -> float:
        status, text = self.agent.http("/metrics")
        assert status == 200
        total = 0.0
        for family in prometheus_client.parser.text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += float(s.value)
        return total

    def policy(self, name: str, pod: str, types: list[str]) -> None:
        self.cluster.apply_policy(
            {
                "metadata": {"namespace": NS, "name": name},
                "spec": {"podSelector": {"matchLabels": {"pod": pod}}, "policyTypes": types},
            }
        )


def _get(entry: dict[str, Any], dotted: str) -> Any:
    value: Any = entry
    for part in dotted.split("__"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


@pytest.fixture(scope="module", params=live.BACKENDS)
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    """The drop-capture cluster, once per dataplane backend."""
    if not prom.available():
        pytest.skip("needs the prometheus Debian package (scripts/setup.sh installs it)")
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="psg-flows-"))
    flow_log = workdir / "flows.jsonl"
    with sandbox_cluster.SandboxCluster(nodes=("node-1",)) as cluster:
        cluster.ensure_namespace(NS, {"ns": NS})
        for name in ("a", "b", "c"):
            labels = {"pod": name}
            if name == "b":
                labels["pod-template-hash"] = "7d9f8c6b5"
            cluster.add_pod(NS, name, labels)
        # b belongs to Deployment "web" (through its ReplicaSet), c to StatefulSet "db"
        for name, kind, owner in (("b", "ReplicaSet", "web-7d9f8c6b5"), ("c", "StatefulSet", "db")):
            cluster.core.patch_namespaced_pod(
                name,
                NS,
                {
                    "metadata": {
                        "ownerReferences": [
                            {
                                "apiVersion": "apps/v1",
                                "kind": kind,
                                "name": owner,
                                "uid": f"uid-{owner}",
                                "controller": True,
                            }
                        ]
                    }
                },
            )
        agent = cluster.start_agent(
            "node-1",
            ["--flow-window", "0.5", "--flow-log-file", str(flow_log), *live.backend_args(request)],
        )
        server = prom.Prometheus([f"127.0.0.1:{agent.metrics_port}"])
        try:
            server.wait_up()
            yield Env(cluster, flow_log, server)
        finally:
            server.close()
    subprocess.run(["rm", "-rf", str(workdir)], check=False)


@pytest.fixture
def clean(env: Env) -> Iterator[Env]:
    env.cluster.delete_all_policies()
    env.cluster.label_namespace(NS, {"podseg.io/mode": None})
    for name in ("a", "b", "c"):
        env.cluster.label_pod(f"{NS}/{name}", {"podseg.io/mode": None})
    env.wait_probe(f"{NS}/a", f"{NS}/b", probe.OK)
    yield env


def test_enforced_drop_is_logged_counted_and_scraped(clean: Env) -> None:
    clean.policy("deny-web", "b", ["Ingress"])
    clean.wait_probe(f"{NS}/a", f"{NS}/b", probe.TIMEOUT)
    for _ in range(3):
        assert clean.probe(f"{NS}/a", f"{NS}/b") == probe.TIMEOUT
    a, b = clean.cluster.pods[f"{NS}/a"], clean.cluster.pods[f"{NS}/b"]
    line = wait_for(
        lambda: clean.flows(direction="ingress", verdict="dropped", dst__pod="b", port=80),
        what="flow log line for a -> b",
    )[-1]
    assert line["event"] == "dropped_flow" and line["time"].endswith("Z")
    assert line["src"] == {
        "kind": "pod",
        "namespace": NS,
        "pod": "a",
        "workload": "<none>",  # a bare pod: never its name
        "ip": a.ipv4,
    }
    assert line["dst"]["workload"] == "web" and line["dst"]["ip"] == b.ipv4
    assert line["protocol"] == "tcp" and line["policy_mode"] == "enforce"
    assert line["reason"] == "policy" and line["policy_tier"] == "networkpolicy"
    assert line["policies"] == [f"{NS}/deny-web"] and line["packets_logged"] >= 1
    labels = {"namespace": NS, "workload": "web", "direction": "ingress", "policy_mode": "enforce"}
    wait_for(
        lambda: clean.metric("podseg_dropped_packets_total", **labels) >= 3,
        what="packets counted (the SYNs, each retransmission included)",
    )
    assert clean.metric("podseg_dropped_flows_total", **labels) >= 1
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    wait_for(
        lambda: (clean.prom.value(f"podseg_dropped_packets_total{{{selector}}}") or 0) >= 3,
        timeout=20,
        what="prometheus sees the dropped packets",
    )
    wait_for(
        lambda: (clean.prom.value(f"podseg_dropped_flows_total{{{selector}}}") or 0) >= 1,
        timeout=20,
        what="prometheus sees the dropped flow",
    )
    # pod names and IPs never become labels
    for series in clean.prom.query('{__name__=~"podseg_dropped_.*"}'):
        values = set(series["metric"].values())
        assert not values & {"a", "b", "c", a.ipv4, b.ipv4}, series


def test_egress_drop_to_an_unknown_address_is_external_folded(clean: Env) -> None:
    clean.policy("deny-db-out", "c", ["Egress"])
    clean.wait_probe(f"{NS}/c", f"{NS}/a", probe.TIMEOUT, proto="udp")
    assert clean.probe(f"{NS}/c", EXTERNAL, proto="udp") == probe.TIMEOUT  # silent, no EPERM
    line = wait_for(
        lambda: clean.flows(direction="egress", src__pod="c", dst__kind="external"),
        what="flow to an external address",
    )[-1]
    assert line["dst"] == {"kind": "external", "ip": "198.19.77.0/24"}
    assert line["src"]["workload"] == "db" and line["protocol"] == "udp"
    assert line["verdict"] == "dropped" and line["policies"] == [f"{NS}/deny-db-out"]
    wait_for(
        lambda: (
            clean.metric(
                "podseg_dropped_packets_total", namespace=NS, workload="db", direction="egress"
            )
            >= 2
        ),
        what="egress drops counted",
    )


def test_visibility_mode_logs_and_accepts_both_directions(clean: Env) -> None:
    clean.policy("lock-web", "b", ["Ingress", "Egress"])
    clean.wait_probe(f"{NS}/a", f"{NS}/b", probe.TIMEOUT)
    assert clean.probe(f"{NS}/b", f"{NS}/a", proto="udp") == probe.TIMEOUT
    before = clean.prom.value(
        'sum(podseg_dropped_flows_total{workload="web",policy_mode="visibility"})'
    )
    # the namespace asks for visibility: b is audited, no longer enforced
    clean.cluster.label_namespace(NS, {"podseg.io/mode": "visibility"})
    clean.wait_probe(f"{NS}/a", f"{NS}/b", probe.OK)  # ingress would-drop: accepted
    for proto in ("tcp", "udp"):  # egress would-drop: accepted, and its replies come back
        assert clean.probe(f"{NS}/b", f"{NS}/a", proto=proto) == probe.OK
    for direction in ("ingress", "egress"):
        line = wait_for(
            lambda d=direction: clean.flows(
                direction=d, verdict="would-drop", policy_mode="visibility"
            ),
            what=f"would-drop {direction} line",
        )[-1]
        assert line["policies"] == [f"{NS}/lock-web"]
    for direction in ("ingress", "egress"):
        wait_for(
            lambda d=direction: (
                clean.metric(
                    "podseg_dropped_packets_total",
                    namespace=NS,
                    workload="web",
                    direction=d,
                    policy_mode="visibility",
                )
                >= 1
            ),
            what=f"{direction} would-drops counted",
        )
    wait_for(
        lambda: (
            (
                clean.prom.value(
                    'sum(podseg_dropped_flows_total{workload="web",policy_mode="visibility"})'
                )
                or 0
            )
            > (before or 0)
        ),
        timeout=20,
        what="prometheus sees visibility-mode flows",
    )
    # a pod's label may make it stricter than its namespace: back to enforcement for b alone
    clean.cluster.label_pod(f"{NS}/b", {"podseg.io/mode": "enforce"})
    clean.wait_probe(f"{NS}/a", f"{NS}/b", probe.TIMEOUT)
    assert clean.probe(f"{NS}/b", f"{NS}/a", proto="udp") == probe.TIMEOUT
    # an unknown value never opens a pod: enforce, reported
    clean.cluster.label_pod(f"{NS}/b", {"podseg.io/mode": "audit-please"})
    wait_for(lambda: clean.agent.events("invalid_mode_label"), what="invalid label log")
    assert clean.probe(f"{NS}/a", f"{NS}/b") == probe.TIMEOUT


def test_a_pod_cannot_label_itself_out_of_an_enforcing_namespace(clean: Env) -> None:
    clean.policy("lock-web", "b", ["Ingress"])
    clean.wait_probe(f"{NS}/a", f"{NS}/b", probe.TIMEOUT)
    clean.cluster.label_pod(f"{NS}/b", {"podseg.io/mode": "visibility"})
    wait_for(lambda: clean.agent.events("pod_mode_label_refused"), what="refused label log")
    clean.wait_probe(f"{NS}/a", f"{NS}/b", probe.TIMEOUT)  # still enforced after the pass
    assert clean.metric("podseg_refused_mode_labels_total") >= 1


def test_exposition_passes_promtool(clean: Env) -> None:
    clean.policy("deny-web", "b", ["Ingress"])
    clean.wait_probe(f"{NS}/a", f"{NS}/b", probe.TIMEOUT)
    wait_for(lambda: clean.metric("podseg_dropped_packets_total") > 0, what="drops")
    status, text = clean.agent.http("/metrics")
    assert status == 200 and "podseg_dropped_flows_total{" in text
    result = subprocess.run(
        [prom.PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_gone_namespace_closes_its_reader_and_gone_workload_loses_its_series(clean: Env) -> None:
    clean.policy("deny-db", "c", ["Ingress"])
    clean.wait_probe(f"{NS}/a", f"{NS}/c", probe.TIMEOUT)
    labels = {"namespace": NS, "workload": "db"}
    wait_for(lambda: clean.metric("podseg_dropped_packets_total", **labels) > 0, what="db")
    # the namespace vanishes under the agent: its reader closes, the agent keeps going
    pod = clean.cluster.pods.pop(f"{NS}/c")
    clean.cluster.sandbox.remove_pod(pod)
    wait_for(
        lambda: [e for e in clean.agent.events("flow_reader_closed") if e["pod"] == f"{NS}/c"],
        what="reader of the vanished namespace closed",
    )
    assert clean.agent.running
    # the pod object goes too: the workload has no pod left, its series are removed
    clean.cluster.core.delete_namespaced_pod("c", NS)
    wait_for(
        lambda: 'workload="db"' not in clean.agent.http("/metrics")[1],
        what="series of the gone workload removed",
    )
    try:
        clean.wait_probe(f"{NS}/a", f"{NS}/b", probe.OK)  # everything else still served
    except AssertionError:
        print("".join(clean.agent.raw[-40:]))
        raise
