"""The real agent against the emulator and the network-policy-api CRDs: without them it is
Ready and says once which kinds it does not watch; CRDs installed at run time are picked up
without a restart, their policies reach the agent (and bad ones are reported), and a CRD
deleted later takes its policies with it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent.k8s import snapshot
from testbed.sandbox import admin, probe
from testbed.sandbox import cluster as sandbox_cluster
from tests.support.live import Env
from tests.support.polling import wait_for

PERIOD = 0.5  # --admin-discovery-period: short, so installs are seen within the test


@pytest.fixture(scope="module")
def env() -> Iterator[sandbox_cluster.SandboxCluster]:
    with sandbox_cluster.SandboxCluster(nodes=("node-1",)) as cluster:
        cluster.ensure_namespace("t", {"ns": "t"})
        cluster.add_pod("t", "a", {"pod": "a"})
        cluster.add_pod("t", "b", {"pod": "b"})
        args = ["--admin-discovery-period", str(PERIOD), "--no-tamper-watch"]
        cluster.start_agent("node-1", args)
        yield cluster


def _admin_policies(agent: sandbox_cluster.AgentProcess) -> list[str]:
    """The admin policies the agent last logged as in effect ([] before any)."""
    lines = agent.events("admin_policies")
    return list(lines[-1]["policies"]) if lines else []


def _cnp(priority: int) -> dict[str, Any]:
    """Admin tier: deny ingress to pod a from every namespace."""
    return {
        "tier": "Admin",
        "priority": priority,
        "subject": {
            "pods": {
                "namespaceSelector": {"matchLabels": {"ns": "t"}},
                "podSelector": {"matchLabels": {"pod": "a"}},
            }
        },
        "ingress": [{"name": "deny", "action": "Deny", "from": [{"namespaces": {}}]}],
    }


def test_without_crds_ready_with_one_info_line(env: sandbox_cluster.SandboxCluster) -> None:
    agent = env.agents["node-1"]
    assert agent.ready()
    # Several discovery periods go by: still one line, no warnings, still ready.
    started = time.monotonic()
    wait_for(lambda: time.monotonic() - started > 4 * PERIOD, what="four discovery periods")
    [line] = agent.events("admin_kinds_not_served")
    assert line["level"] == "info"
    assert line["kinds"] == sorted(admin.ADMIN_KINDS[k][1] for k in admin.ADMIN_KINDS)
    assert not [e for e in agent.lines if e.get("level") in ("warning", "error")]
    assert agent.ready()
    # What operator commands load (`podseg explain`): in sync, no admin kinds.
    view = snapshot.load(env.api_client)
    assert view.in_sync and view.admin_expected == set() and view.admin_policies() == []


def test_crds_installed_at_run_time_then_deleted(env: sandbox_cluster.SandboxCluster) -> None:
    agent = env.agents["node-1"]
    live = Env(env)
    live.wait_verdict("t/b", "t/a", probe.OK)
    env.install_admin_crds()
    watched = wait_for(
        lambda: (
            {e["resource"] for e in agent.events("admin_kind_watched")}
            >= {"clusternetworkpolicies", "adminnetworkpolicies", "baselineadminnetworkpolicies"}
        ),
        timeout=15,
        what="the agent watching the three admin kinds",
    )
    assert watched
    env.apply_admin_policy("ClusterNetworkPolicy", "deny-into-t", _cnp(10))
    wait_for(
        lambda: "ClusterNetworkPolicy/deny-into-t" in _admin_policies(agent),
        timeout=15,
        what="the agent holding the ClusterNetworkPolicy",
    )
    wait_for(agent.ready, timeout=15, what="ready with the admin kinds listed")
    live.wait_verdict("t/b", "t/a", probe.TIMEOUT)  # enforced in a's namespace
    assert live.verdict("t/a", "t/b") == probe.OK
    view = snapshot.load(env.api_client)
    assert view.in_sync and [p.key for p in view.admin_policies()] == [
        "ClusterNetworkPolicy/deny-into-t"
    ]

    # A bad one: logged, counted, and an Event on the cluster-scoped object in `default`.
    env.apply_admin_policy("AdminNetworkPolicy", "bad", {"priority": 5000, "subject": {}})
    wait_for(
        lambda: [e for e in agent.events("admin_policy_invalid_parts") if e["policy"] == "bad"],
        timeout=15,
        what="the invalid AdminNetworkPolicy reported",
    )
    metric = 'podseg_invalid_admin_policies{kind="AdminNetworkPolicy"} 1.0'
    wait_for(lambda: metric in agent.http("/metrics")[1], timeout=15, what=metric)

    def invalid_event() -> list[Any]:
        return [
            e
            for e in env.core.list_namespaced_event("default").items
            if e.reason == "InvalidPolicy" and e.involved_object.kind == "AdminNetworkPolicy"
        ]

    [event] = wait_for(invalid_event, timeout=30, what="the InvalidPolicy Event in default")
    assert event.involved_object.name == "bad"
    assert event.involved_object.namespace in (None, "")
    assert event.involved_object.api_version == "policy.networking.k8s.io/v1alpha1"

    # The ClusterNetworkPolicy CRD goes: its watch stops, its policy leaves the agent.
    env.uninstall_admin_crds(["clusternetworkpolicies.policy.networking.k8s.io"])
    wait_for(
        lambda: [
            e
            for e in agent.events("admin_kind_not_served_any_more")
            if e["resource"] == "clusternetworkpolicies"
        ],
        timeout=15,
        what="the agent noticing the CRD is gone",
    )
    wait_for(
        lambda: _admin_policies(agent) == ["AdminNetworkPolicy/bad"],
        timeout=15,
        what="the ClusterNetworkPolicy gone from the agent",
    )
    wait_for(agent.ready, timeout=15, what="still ready")
    live.wait_verdict("t/b", "t/a", probe.OK)  # the rules went with the policy
    env.delete_admin_policy("AdminNetworkPolicy", "bad")
    wait_for(lambda: _admin_policies(agent) == [], timeout=15, what="no admin policies")
    env.uninstall_admin_crds()
    wait_for(agent.ready, timeout=15, what="ready without CRDs")
