"""The store's admin policies: ClusterNetworkPolicy / ANP / BANP objects converted through
agent.tiers.convert, kept only for served kinds, counted in readiness, and any change of them
recompiles every local pod."""

from __future__ import annotations

from typing import Any

from agent import store
from agent.k8s import watch
from agent.tiers import model as tiers

CNP = "clusternetworkpolicies"
ANP = "adminnetworkpolicies"
BANP = "baselineadminnetworkpolicies"


def _cnp(name: str, tier: str = "Admin", priority: Any = 5, rv: str = "1") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": rv},
        "spec": {
            "tier": tier,
            "priority": priority,
            "subject": {"namespaces": {}},
            "ingress": [{"name": "r", "action": "Deny", "from": [{"namespaces": {}}]}],
        },
    }


def _anp(name: str, priority: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": "3"},
        "spec": {"priority": priority, "subject": {"namespaces": {}}, "ingress": []},
    }


def _synced(*admin: str) -> store.Store:
    cluster = store.Store()
    for kind in admin:
        cluster.expect_admin(kind)
    for kind in store.KINDS:
        cluster.apply(watch.Relist(kind, [], "1", 0.0), store.Change())
    return cluster


def test_admin_kinds_count_towards_sync_only_when_served() -> None:
    assert _synced().in_sync  # no CRDs: as before
    cluster = _synced(CNP, ANP)
    assert not cluster.in_sync
    cluster.apply(watch.Relist(CNP, [], "1", 0.0), store.Change())
    assert not cluster.in_sync
    cluster.apply(watch.Relist(ANP, [], "1", 0.0), store.Change())
    assert cluster.in_sync
    cluster.admin_known = False  # discovery has not answered yet
    assert not cluster.in_sync


def test_conversion_order_and_change_marks_all_pods() -> None:
    cluster = _synced(CNP, ANP, BANP)
    change = store.Change()
    cluster.apply(
        watch.Relist(CNP, [_cnp("base", "Baseline", 1), _cnp("top", "Admin", 9)], "2", 0), change
    )
    cluster.apply(watch.Relist(ANP, [_anp("anp", 3)], "2", 0.0), change)
    cluster.apply(
        watch.Relist(BANP, [{"metadata": {"name": "default"}, "spec": {}}], "2", 0), change
    )
    assert cluster.in_sync
    policies = cluster.admin_policies()
    assert [p.key for p in policies] == [
        "AdminNetworkPolicy/anp",
        "ClusterNetworkPolicy/top",
        "ClusterNetworkPolicy/base",
        "BaselineAdminNetworkPolicy/default",
    ]
    assert all(isinstance(p, tiers.ClusterPolicy) for p in policies)
    assert policies[1].ingress[0].action == tiers.DENY
    assert set(change.admin) == {f"{CNP}/base", f"{CNP}/top", f"{ANP}/anp", f"{BANP}/default"}
    assert cluster.affected_changes(change).relisted  # every local pod recompiles

    quiet = store.Change()
    cluster.apply(watch.WatchEvent(CNP, "MODIFIED", _cnp("top", "Admin", 9), 0.0), quiet)
    assert not quiet and not cluster.affected_changes(quiet).relisted
    moved = store.Change()
    cluster.apply(watch.WatchEvent(CNP, "MODIFIED", _cnp("top", "Admin", 4, rv="7"), 0.0), moved)
    assert moved and cluster.affected_changes(moved).relisted
    old = moved.admin[f"{CNP}/top"]
    assert old is not None and old.priority == 9
    gone = store.Change()
    cluster.apply(watch.WatchEvent(CNP, "DELETED", _cnp("top"), 0.0), gone)
    last = gone.admin[f"{CNP}/top"]
    assert last is not None and (last.priority, last.resource_version) == (4, "7")
    assert "ClusterNetworkPolicy/top" not in {p.key for p in cluster.admin_policies()}


def test_invalid_policy_is_kept_with_its_errors() -> None:
    cluster = _synced(CNP)
    cluster.apply(watch.Relist(CNP, [_cnp("bad", "Middle", 5)], "2", 0.0), store.Change())
    [bad] = cluster.admin_policies()
    assert bad.errors and "Middle" in bad.errors[0]


def test_a_kind_no_longer_served_drops_its_policies_and_ignores_late_items() -> None:
    cluster = _synced(CNP)
    cluster.apply(watch.Relist(CNP, [_cnp("a"), _cnp("b", priority=6)], "2", 0.0), store.Change())
    assert len(cluster.admin_policies()) == 2
    cluster.forget_admin(CNP)
    assert cluster.in_sync  # the kind no longer counts
    change = store.Change()
    cluster.apply(watch.Relist(CNP, [], "", 0.0), change)
    assert cluster.admin_policies() == []
    assert set(change.admin) == {f"{CNP}/a", f"{CNP}/b"}
    assert cluster.affected_changes(change).relisted
    late = store.Change()  # an event its stopped reflector delivered after all
    cluster.apply(watch.WatchEvent(CNP, "ADDED", _cnp("c"), 0.0), late)
    assert cluster.admin_policies() == [] and not late
    cluster.expect_admin(CNP)  # served again: not in sync until it is listed
    assert not cluster.in_sync
    cluster.apply(watch.Relist(CNP, [_cnp("c")], "9", 0.0), store.Change())
    assert cluster.in_sync and [p.name for p in cluster.admin_policies()] == ["c"]
