"""The Grafana dashboard and the alert rules: valid for their tools, and every metric they use
is one the agent exports (a renamed metric would otherwise leave a blank panel or a silent
alert)."""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess
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
