"""The Grafana dashboard and the alert rules: valid for their tools, every metric they use is
one the agent exports (a renamed metric would otherwise leave a blank panel or a silent alert),
and a real Prometheus scraping as the monitors say keeps the pod's `namespace` label."""

from __future__ import annotations

import http.server
import json
import pathlib
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest
import yaml

from tests.support import manifests
from tests.support.manifests import find

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
needs_promtool = pytest.mark.skipif(
    not pathlib.Path(PROMTOOL).is_file(), reason="needs promtool (scripts/setup.sh installs it)"
)


def dashboard(rendered: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    config_map = find(rendered["monitoring"], "ConfigMap", "podseg-grafana-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    parsed: dict[str, Any] = json.loads(config_map["data"]["podseg.json"])
    return parsed


def _exprs(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


def test_dashboard_uses_only_exported_metrics(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    used = {m for e in _exprs(dashboard(rendered)) for m in re.findall(r"\bpodseg_[a-z_]+", e)}
    exported = manifests.exported_names()
    assert used <= exported, f"unknown metrics in the dashboard: {sorted(used - exported)}"
    for wanted in (
        "podseg_dropped_packets_total",
        "podseg_dropped_flows_total",
        "podseg_policy_programming_seconds_bucket",
        "podseg_managed_pods",
        "podseg_apply_errors_total",
    ):
        assert wanted in used


def test_dashboard_shows_drops_by_workload_and_would_drops(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    board = dashboard(rendered)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    exprs = _exprs(board)
    assert any(
        'policy_mode="enforce"' in e and "by (namespace, workload, direction)" in e for e in exprs
    )
    assert any('policy_mode="visibility"' in e for e in exprs)


@needs_promtool
def test_alert_rules_pass_promtool(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: pathlib.Path
) -> None:
    rule = find(rendered["monitoring"], "PrometheusRule")
    names = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "PodsegAgentNotReady",
        "PodsegApplyErrors",
        "PodsegUnprotectedPods",
        "PodsegDropsSpiking",
    } <= names
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_rejects_a_broken_rule(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "rules.yaml"
    broken = {"groups": [{"name": "x", "rules": [{"alert": "X", "expr": "sum(rate(a[5m])"}]}]}
    path.write_text(yaml.safe_dump(broken))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode != 0


# -- the scraped `namespace` label survives the scrape -----------------------------------------

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
needs_prometheus = pytest.mark.skipif(
    not pathlib.Path(PROMETHEUS).is_file(), reason="needs prometheus (scripts/setup.sh installs it)"
)
# What the agent exports: the `namespace` label is the dropping pod's namespace.
_SERIES = (
    ('namespace="shop",workload="web",direction="ingress",policy_mode="enforce"', 7),
    ('namespace="ops",workload="mon",direction="egress",policy_mode="visibility"', 3),
)
EXPOSITION = "".join(
    f"# TYPE {name} counter\n"
    + "".join(f"{name}{{{labels}}} {value}\n" for labels, value in _SERIES)
    for name in ("podseg_dropped_packets_total", "podseg_dropped_flows_total")
)


def _monitors(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The scrape endpoints of the ServiceMonitor and of the PodMonitor alternative."""
    service_monitor = find(rendered["monitoring"], "ServiceMonitor")
    pod_monitor = yaml.safe_load((manifests.DEPLOY / "monitoring" / "podmonitor.yaml").read_text())
    return [*service_monitor["spec"]["endpoints"], *pod_monitor["spec"]["podMetricsEndpoints"]]


def _scrape_job(name: str, target: str, honor_labels: bool) -> dict[str, Any]:
    """The scrape job prometheus-operator generates for an agent endpoint, reduced to what
    decides the labels: honor_labels and the target labels it attaches (namespace, service,
    pod, container, endpoint, and the monitors' `node` relabeling)."""
    return {
        "job_name": name,
        "scrape_interval": "1s",
        "honor_labels": honor_labels,
        "static_configs": [
            {
                "targets": [target],
                "labels": {
                    "namespace": "podseg-system",
                    "service": "podseg-agent-metrics",
                    "pod": "podseg-agent-x2k4p",
                    "container": "agent",
                    "endpoint": "metrics",
                    "node": "node-1",
                    "setting": name,
                },
            }
        ],
    }


@needs_prometheus
def test_dashboard_queries_group_by_the_pods_namespace(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: pathlib.Path
) -> None:
    """A real Prometheus scrapes the agent's exposition as the monitors configure it: the
    dashboard's panels (and the alerts) group drops by the pod's namespace, not by
    podseg-system, which the target carries. The same scrape without honorLabels shows what
    it would be otherwise: `namespace="podseg-system"` and the pod's namespace hidden in
    `exported_namespace`."""
    endpoints = _monitors(rendered)
    assert [e.get("honorLabels") for e in endpoints] == [True] * len(endpoints)
    exporter = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Exposition)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    target = f"127.0.0.1:{exporter.server_address[1]}"
    port = _free_port()
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            _scrape_job("monitors", target, honor_labels=endpoints[0]["honorLabels"]),
            _scrape_job("without-honor-labels", target, honor_labels=False),
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    with (tmp_path / "prometheus.log").open("w") as log:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            board = dashboard(rendered)
            panels = [e for e in _exprs(board) if "by (namespace, workload, direction)" in e]
            assert len(panels) == 4
            for expr in panels:
                wanted = {"shop"} if 'policy_mode="enforce"' in expr else {"ops"}
                ours = _grafana(expr, setting="monitors")
                result = _wait_query(port, ours)
                assert {r["metric"]["namespace"] for r in result} == wanted, (expr, result)
                other = _wait_query(port, _grafana(expr, setting="without-honor-labels"))
                assert {r["metric"]["namespace"] for r in other} == {"podseg-system"}
            # the namespace variable offers the pods' namespaces
            names = _wait_query(
                port, 'count by (namespace) (podseg_dropped_packets_total{setting="monitors"})'
            )
            assert {r["metric"]["namespace"] for r in names} == {"shop", "ops"}
        finally:
            proc.terminate()
            proc.wait(10)
            exporter.shutdown()


class _Exposition(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = EXPOSITION.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _grafana(expr: str, setting: str) -> str:
    """A panel's expression as Grafana sends it with every variable at "All", limited to one
    scrape setting."""
    expr = expr.replace('node=~"$node"', f'node=~".*", setting="{setting}"')
    return expr.replace('"$namespace"', '".*"').replace("$__rate_interval", "1m")


def _wait_query(port: int, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                result: list[dict[str, Any]] = json.loads(response.read())["data"]["result"]
            if result:
                return result
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no result for {expr} within {timeout}s")
        time.sleep(0.3)
