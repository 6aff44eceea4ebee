"""convert.slim_pod keeps exactly what convert.pod reads: on realistic pods and on random
variations of their shape (odd types included), the model is the same from the slim object as
from the whole one, and the slim object is much smaller. watch.list_all applies it per page."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from agent.k8s import convert, watch
from testbed import objects

ODD = [None, 7, "x", [], {}, [1, "a"], {"k": 1}, True]


def variant(rnd: random.Random, n: int) -> dict[str, Any]:
    pod = objects.realistic_pod(
        f"web-{n}", f"ns-{n % 3}", {"app": f"a{n}"}, f"198.18.0.{n % 250 + 1}", "node-1", serial=n
    )
    meta, spec, status = pod["metadata"], pod["spec"], pod["status"]
    if rnd.random() < 0.3:
        spec["hostNetwork"] = True
    if rnd.random() < 0.3:
        spec["initContainers"] = [
            {"name": "init", "image": "x", "ports": [{"containerPort": 53, "protocol": "UDP"}]}
        ]
    if rnd.random() < 0.3:
        meta["deletionTimestamp"] = "2026-12-01T11:00:00Z"
    if rnd.random() < 0.3:
        del meta["ownerReferences"]
    if rnd.random() < 0.3:
        status.pop("podIPs", None)
    # odd shapes anywhere convert.pod looks, and where it does not
    first = spec["containers"][0]
    for _ in range(rnd.randrange(3)):
        where = rnd.choice([meta, spec, status, first, pod])
        key = rnd.choice(
            [
                "labels",
                "annotations",
                "ownerReferences",
                "containers",
                "ports",
                "podIPs",
                "podIP",
                "phase",
                "nodeName",
                "volumes",
                "managedFields",
            ]
        )
        where[key] = copy.deepcopy(rnd.choice(ODD))
    return pod


def model_or_error(obj: dict[str, Any]) -> Any:
    try:
        return convert.pod(obj)
    except Exception as exc:  # a malformed pod must stay malformed, with the same error
        return type(exc).__name__


@pytest.mark.parametrize("seed", range(20))
def test_slim_pod_reads_the_same(seed: int) -> None:
    rnd = random.Random(seed)
    for n in range(50):
        pod = variant(rnd, n)
        before = copy.deepcopy(pod)
        slim = convert.slim_pod(pod)
        assert model_or_error(slim) == model_or_error(pod)
        assert pod == before  # the caller's object is not changed


def test_slim_pod_drops_the_bulk() -> None:
    pod = objects.realistic_pod("web-1", "ns", {"app": "a"}, "198.18.0.1", "node-1")
    slim = convert.slim_pod(pod)
    assert "managedFields" not in slim["metadata"] and "containerStatuses" not in slim["status"]
    assert len(json.dumps(slim)) * 4 < len(json.dumps(pod))
    assert convert.pod(slim).container_ports == convert.pod(pod).container_ports != ()


class FakeResponse:
    def __init__(self, body: dict[str, Any]) -> None:
        self.data = json.dumps(body).encode()


def test_list_all_slims_each_page() -> None:
    pods = [objects.realistic_pod(f"p{i}", "ns", {}, f"198.18.0.{i + 1}", "n") for i in range(5)]

    def list_fn(**kwargs: Any) -> FakeResponse:
        start = int(kwargs.get("_continue") or 0)
        more = {"continue": str(start + 2)} if start + 2 < len(pods) else {}
        return FakeResponse(
            {"items": pods[start : start + 2], "metadata": {"resourceVersion": "9", **more}}
        )

    relist = watch.list_all("pods", list_fn, 2, convert.slim_pod)
    assert [i["metadata"]["name"] for i in relist.items] == [f"p{i}" for i in range(5)]
    assert all("managedFields" not in i["metadata"] for i in relist.items)
    assert relist.resource_version == "9"
    assert watch.SLIM["pods"] is convert.slim_pod


def test_pods_read_from_json_share_their_repeated_strings_and_container_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The mirror of 10,000 pods holds one copy of what they repeat (labels, namespace, node,
    container ports), not one per pod; the equality of the models is unchanged."""
    first, second = (
        convert.pod(
            json.loads(
                json.dumps(
                    objects.realistic_pod(
                        f"web-{i}", "shop", {"app": "web"}, f"198.18.0.{i}", "node-2", serial=i
                    )
                )
            )
        )
        for i in (1, 2)
    )
    assert first.labels == second.labels
    for key, value in first.labels.items():
        other = next(k for k in second.labels if k == key)
        assert other is key and second.labels[other] is value
    assert first.namespace is second.namespace and first.node_name is second.node_name
    assert first.container_ports and all(
        a is b for a, b in zip(first.container_ports, second.container_ports, strict=True)
    )
    # the shared ports are bounded: past the cap, a pod gets its own (equal) objects
    monkeypatch.setattr(convert, "_PORTS", {})
    monkeypatch.setattr(convert, "MAX_SHARED_PORTS", 0)
    third = convert.pod(
        objects.realistic_pod("web-3", "shop", {"app": "web"}, "198.18.0.3", "node-2")
    )
    assert third.container_ports == first.container_ports and not convert._PORTS
