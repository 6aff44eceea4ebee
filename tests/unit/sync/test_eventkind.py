"""Event kinds for podseg_policy_programming_seconds{kind}: one bounded label per batch."""

from __future__ import annotations

from agent import model, store
from agent.sync import eventkind


def _pod(ips: tuple[str, ...] = ("198.18.0.1",), **labels: str) -> model.Pod:
    return model.Pod(namespace="a", name="p", labels=labels, ips=ips)


def test_each_kind_of_batch() -> None:
    now_pod = _pod(app="x")
    pods = {"a/p": now_pod}
    ns = {"a": model.Namespace("a", {"team": "t2"})}

    def kind(**fields: object) -> str:
        return eventkind.classify(store.Change(**fields), pods, ns)  # type: ignore[arg-type]

    assert kind(pods={"a/p": None}) == "pod_added"
    assert kind(pods={"a/gone": _pod()}) == "pod_deleted"
    assert kind(pods={"a/p": _pod((), app="x")}) == "pod_ip"
    assert kind(pods={"a/p": _pod(app="y")}) == "pod_labels"
    assert kind(pods={"a/p": now_pod}) == "pod_other"
    assert kind(namespaces={"a": model.Namespace("a", {"team": "t1"})}) == "namespace_labels"
    assert kind(namespaces={"a": None}) == "namespace"
    assert kind(policies={"a/np": None}) == "policy"
    assert kind(nodes={"n": None}) == "node"
    assert kind(policies={"a/np": None}, relisted=True) == "relist"
    assert kind(policies={"a/np": None}, pods={"a/p": None}) == "mixed"
    assert kind() == ""
    assert {kind(pods={"a/p": None}), kind(policies={"x": None})} <= set(eventkind.KINDS)
