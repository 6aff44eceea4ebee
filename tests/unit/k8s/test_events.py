"""Events about cluster-scoped objects: posted to the given namespace, the involved object
without a namespace (as `kubectl describe` of a cluster-scoped object looks them up)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.k8s import events


class Response:
    def release_conn(self) -> None: ...


def test_cluster_scoped_involved_object(monkeypatch: pytest.MonkeyPatch) -> None:
    posted: list[tuple[dict[str, str], dict[str, Any]]] = []

    def call(api: Any, method: str, path: str, **kwargs: Any) -> Response:
        posted.append((kwargs["path_params"], kwargs["body"]))
        return Response()

    monkeypatch.setattr(events.rest, "call", call)
    recorder = events.Recorder(object(), "node-1")  # type: ignore[arg-type]
    common = {
        "kind": "ClusterNetworkPolicy",
        "api_version": "policy.networking.k8s.io/v1alpha2",
        "name": "deny",
        "resource_version": "3",
        "reason": "InvalidPolicy",
        "message": "m",
        "blocking": True,
    }
    recorder.warn(namespace="default", object_namespace="", **common)
    recorder.warn(namespace="default", object_namespace="", **common)  # once per version
    [(params, body)] = posted
    assert params == {"namespace": "default"}
    assert body["metadata"]["namespace"] == "default"
    assert body["involvedObject"] == {
        "kind": "ClusterNetworkPolicy",
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "name": "deny",
        "resourceVersion": "3",
    }
    recorder.warn(namespace="x", **{**common, "kind": "NetworkPolicy", "resource_version": "4"})
    assert posted[-1][1]["involvedObject"]["namespace"] == "x"  # namespaced: as before
