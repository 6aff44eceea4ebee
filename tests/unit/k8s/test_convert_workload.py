"""A pod's workload, named from its controller's ownerReference (a ReplicaSet's Deployment by
the pod-template-hash), never from the pod's own name."""

from __future__ import annotations

import pytest

from agent import model
from agent.k8s import convert


def _pod(owners: object, labels: dict[str, str] | None = None) -> model.Pod:
    return convert.pod(
        {
            "metadata": {
                "namespace": "x",
                "name": "web-7d9f8c6b5-abcde",
                "labels": labels or {},
                "ownerReferences": owners,
            }
        }
    )


@pytest.mark.parametrize(
    ("owners", "labels", "workload"),
    [
        (
            [{"kind": "ReplicaSet", "name": "web-7d9f8c6b5", "controller": True}],
            {"pod-template-hash": "7d9f8c6b5"},
            "web",
        ),
        (
            [{"kind": "ReplicaSet", "name": "standalone-rs", "controller": True}],
            {},
            "standalone-rs",
        ),
        ([{"kind": "StatefulSet", "name": "db", "controller": True}], {}, "db"),
        ([{"kind": "DaemonSet", "name": "agent", "controller": True}], {}, "agent"),
        ([{"kind": "Job", "name": "backup-28934", "controller": True}], {}, "backup-28934"),
        (
            [{"kind": "ConfigMap", "name": "cm"}, {"kind": "Job", "name": "j", "controller": True}],
            {},
            "j",
        ),
        (None, {}, ""),  # a bare pod: never its own name
        ("garbage", {}, ""),
        ([{"kind": "ReplicaSet"}], {}, ""),
    ],
)
def test_workload_from_owner_references(
    owners: object, labels: dict[str, str], workload: str
) -> None:
    assert _pod(owners, labels).workload == workload
