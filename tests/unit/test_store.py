"""The store mirrors the API: relists replace (catching missed deletes), events update, and a
batch records each changed object's version from before the batch."""

from __future__ import annotations

from typing import Any

from agent import store
from agent.k8s import watch


def _pod(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "x", "labels": labels or {}}}


def test_relist_replaces_content_and_reports_missed_deletes() -> None:
    cluster = store.Store()
    first = store.Change()
    cluster.apply(watch.Relist("pods", [_pod("a"), _pod("b")], "5", 0.0), first)
    assert set(cluster.pods) == {"x/a", "x/b"}
    assert first.relisted and set(first.pods) == {"x/a", "x/b"}
    assert first.pods["x/a"] is None  # did not exist before
    second = store.Change()
    cluster.apply(watch.Relist("pods", [_pod("a")], "9", 0.0), second)
    assert set(cluster.pods) == {"x/a"}
    assert set(second.pods) == {"x/b"}  # only the delete we missed; a is unchanged
    assert second.pods["x/b"] is not None and second.pods["x/b"].name == "b"


def test_events_keep_the_oldest_version_of_a_batch() -> None:
    cluster = store.Store()
    cluster.apply(watch.Relist("pods", [_pod("a", {"v": "1"})], "1", 0.0), store.Change())
    change = store.Change()
    cluster.apply(watch.WatchEvent("pods", "MODIFIED", _pod("a", {"v": "2"}), 0.0), change)
    cluster.apply(watch.WatchEvent("pods", "MODIFIED", _pod("a", {"v": "3"}), 0.0), change)
    old = change.pods["x/a"]
    assert old is not None and old.labels == {"v": "1"}
    assert cluster.pods["x/a"].labels == {"v": "3"}
    unchanged = store.Change()
    cluster.apply(watch.WatchEvent("pods", "MODIFIED", _pod("a", {"v": "3"}), 0.0), unchanged)
    assert not unchanged
    cluster.apply(watch.WatchEvent("pods", "DELETED", _pod("a"), 0.0), unchanged)
    assert "x/a" in unchanged.pods and "x/a" not in cluster.pods


def test_in_sync_only_after_every_kind_listed() -> None:
    cluster = store.Store()
    for kind in store.KINDS[:-1]:
        cluster.apply(watch.Relist(kind, [], "1", 0.0), store.Change())
        assert not cluster.in_sync
    cluster.apply(watch.Relist(store.KINDS[-1], [], "1", 0.0), store.Change())
    assert cluster.in_sync


def _node(rv: str, address: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "node-2", "resourceVersion": rv},
        "status": {"addresses": [{"type": "InternalIP", "address": address}]},
    }


def test_a_node_status_update_is_no_change_but_an_address_change_is() -> None:
    cluster = store.Store()
    cluster.apply(
        watch.WatchEvent("nodes", "ADDED", _node("1", "198.18.128.1"), 0.0), store.Change()
    )
    heartbeat = store.Change()
    cluster.apply(watch.WatchEvent("nodes", "MODIFIED", _node("2", "198.18.128.1"), 0.0), heartbeat)
    assert not heartbeat  # kubelets rewrite Node status all the time: no recompile of every pod
    moved = store.Change()
    cluster.apply(watch.WatchEvent("nodes", "MODIFIED", _node("3", "198.18.128.9"), 0.0), moved)
    assert moved.nodes and cluster.nodes["node-2"].addresses == ("198.18.128.9",)
