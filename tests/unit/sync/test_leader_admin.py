"""The policy-status writer's Events about admin policies: InvalidPolicy and PriorityConflict
on the cluster-scoped object, posted to `default` with a fixed name per version."""

from __future__ import annotations

from typing import Any

from agent import config, store
from agent.k8s import watch
from agent.sync import leader


class Recorder:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def warn(self, **kwargs: Any) -> None:
        self.sent.append(kwargs)


def _obj(name: str, priority: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": "4"},
        "spec": {"priority": priority, "subject": {"namespaces": {}}},
    }


def test_admin_events() -> None:
    cluster = store.Store()
    cluster.expect_admin("adminnetworkpolicies")
    items = [_obj("a", 10), _obj("b", 10), _obj("c", "high")]
    cluster.apply(watch.Relist("adminnetworkpolicies", items, "4", 0.0), store.Change())
    recorder = Recorder()
    writer = leader.PolicyStatusWriter(config.Settings("n", None), None, cluster, {}, recorder)  # type: ignore[arg-type]
    writer.warn_admin(cluster.admin_policies())
    by = {(e["name"], e["reason"]): e for e in recorder.sent}
    assert set(by) == {("a", "PriorityConflict"), ("b", "PriorityConflict"), ("c", "InvalidPolicy")}
    invalid = by[("c", "InvalidPolicy")]
    assert invalid["kind"] == "AdminNetworkPolicy"
    assert invalid["api_version"] == "policy.networking.k8s.io/v1alpha1"
    assert invalid["namespace"] == "default" and invalid["object_namespace"] == ""
    assert "'high'" in invalid["message"]
    assert by[("a", "PriorityConflict")]["message"].startswith("Admin tier priority 10 shared with")
    assert invalid["event_name"] == leader.event_name("AdminNetworkPolicy/c", "InvalidPolicy", "4")
