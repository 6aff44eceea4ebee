"""The store lends a new pod the IPs podseg-cni reported until the API shows the pod's own,
with its labels as the API has them."""

from __future__ import annotations

from typing import Any

from agent import store
from agent.k8s import watch


def _pod(name: str, ips: list[str] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "x", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-1"},
    }
    if ips:
        obj["status"] = {"podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips]}
    return obj


def _hint(key: str, ips: list[str]) -> watch.WatchEvent:
    obj = {"key": key, "ips": ips, "netns": "/run/netns/psg-x", "containerId": "c1"}
    return watch.WatchEvent(store.CNI, "ADDED", obj, 0.0)


def test_a_known_pod_without_ips_takes_the_plugins_and_is_marked_changed() -> None:
    cluster = store.Store()
    cluster.apply(watch.Relist("pods", [_pod("a")], "1", 0.0), store.Change())
    assert cluster.pods["x/a"].ips == ()
    change = store.Change()
    cluster.apply(_hint("x/a", ["198.18.1.2"]), change)
    assert cluster.pods["x/a"].ips == ("198.18.1.2",)
    assert cluster.pods["x/a"].labels == {"app": "web"}
    assert "x/a" in change.pods and change.pods["x/a"] is not None


def test_a_pod_seen_after_the_hint_gets_its_ips_and_updates_keep_them() -> None:
    cluster = store.Store()
    cluster.apply(_hint("x/b", ["198.18.1.3"]), store.Change())
    assert "x/b" not in cluster.pods
    cluster.apply(watch.WatchEvent("pods", "ADDED", _pod("b"), 0.0), store.Change())
    assert cluster.pods["x/b"].ips == ("198.18.1.3",)
    cluster.apply(watch.Relist("pods", [_pod("b")], "2", 0.0), store.Change())
    assert cluster.pods["x/b"].ips == ("198.18.1.3",)


def test_the_apis_ips_win_and_a_delete_drops_the_hint() -> None:
    cluster = store.Store()
    cluster.apply(_hint("x/c", ["198.18.1.4"]), store.Change())
    cluster.apply(watch.WatchEvent("pods", "ADDED", _pod("c", ["198.18.1.9"]), 0.0), store.Change())
    assert cluster.pods["x/c"].ips == ("198.18.1.9",)
    assert "x/c" not in cluster.cni_hints
    cluster.apply(_hint("x/d", ["198.18.1.5"]), store.Change())
    cluster.apply(watch.WatchEvent("pods", "ADDED", _pod("d"), 0.0), store.Change())
    cluster.apply(watch.WatchEvent("pods", "DELETED", _pod("d"), 0.0), store.Change())
    assert "x/d" not in cluster.cni_hints and "x/d" not in cluster.pods


def test_hints_are_bounded() -> None:
    cluster = store.Store()
    for n in range(store.MAX_CNI_HINTS + 5):
        cluster.apply(_hint(f"x/p{n}", ["198.18.1.2"]), store.Change())
    assert len(cluster.cni_hints) == store.MAX_CNI_HINTS
