"""Reports about admin policies: the info line when the set in effect changes, a warning once
per version for invalid parts and for a shared tier and priority, bounded gauges."""

from __future__ import annotations

from typing import Any

import structlog.testing

from agent import metrics
from agent.sync import report
from agent.tiers import convert as tiers_convert
from agent.tiers import model as tiers


class Recorder:
    def on_pod(self, *args: Any, **kwargs: Any) -> None: ...

    def warn(self, **kwargs: Any) -> None: ...


def _cnp(name: str, priority: Any, rv: str = "1", tier: str = "Admin") -> tiers.ClusterPolicy:
    return tiers_convert.cluster_network_policy(
        {
            "metadata": {"name": name, "resourceVersion": rv},
            "spec": {"tier": tier, "priority": priority, "subject": {"namespaces": {}}},
        }
    )


def _gauge(metric: Any, label: str) -> float:
    value = metrics.REGISTRY.get_sample_value(metric, label_of_value(metric, label))
    return value if value is not None else 0.0


def label_of_value(metric: str, value: str) -> dict[str, str]:
    return {"kind": value} if metric == "podseg_invalid_admin_policies" else {"tier": value}


def test_admin_reports_once_per_version() -> None:
    reporter = report.Reporter(Recorder())
    policies = [_cnp("a", 5), _cnp("b", 5), _cnp("bad", 5000), _cnp("ok", 7, tier="Baseline")]
    ordered = sorted(policies, key=lambda p: p.order)
    with structlog.testing.capture_logs() as logs:
        reporter.admin_policies(ordered)
        reporter.admin_policies(ordered)  # nothing new: nothing logged again
    events = [e["event"] for e in logs]
    assert events.count("admin_policies") == 1
    assert events.count("admin_policy_invalid_parts") == 1
    assert events.count("admin_policy_priority_conflict") == 2  # a and b
    [invalid] = [e for e in logs if e["event"] == "admin_policy_invalid_parts"]
    assert invalid["policy"] == "bad" and "5000" in invalid["problem"]
    assert _gauge("podseg_invalid_admin_policies", "ClusterNetworkPolicy") == 1
    assert _gauge("podseg_invalid_admin_policies", "AdminNetworkPolicy") == 0
    assert _gauge("podseg_admin_priority_conflicts", "Admin") == 2
    assert _gauge("podseg_admin_priority_conflicts", "Baseline") == 0

    fixed = sorted(
        [_cnp("a", 5), _cnp("b", 6, rv="2"), _cnp("ok", 7, tier="Baseline")], key=lambda p: p.order
    )
    with structlog.testing.capture_logs() as logs:
        reporter.admin_policies(fixed)
    assert [e["event"] for e in logs] == ["admin_policies"]
    assert logs[0]["policies"] == [p.key for p in fixed]
    assert _gauge("podseg_invalid_admin_policies", "ClusterNetworkPolicy") == 0
    assert _gauge("podseg_admin_priority_conflicts", "Admin") == 0
    # Broken again at a new version: reported again.
    with structlog.testing.capture_logs() as logs:
        reporter.admin_policies(sorted([*fixed, _cnp("bad", -1, rv="9")], key=lambda p: p.order))
    assert "admin_policy_invalid_parts" in [e["event"] for e in logs]
