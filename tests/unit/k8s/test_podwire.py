"""agent.k8s.podwire reads pods off the API's JSON bytes into the same `model.Pod` that
`json.loads`, `convert.slim_pod` and `convert.pod` make, for realistic pods and for pods with
odd values anywhere `convert.pod` looks (hypothesis); what it declines goes the old way, item
by item, so one odd pod in a page costs the others nothing and is reported by the store."""

from __future__ import annotations

import copy
import json
import pathlib
import queue
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import metrics, model, store
from agent.k8s import clients, convert, podwire, rest, watch
from testbed import objects
from testbed.emulator import server
from tests.support.polling import wait_for

leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=6),
    st.sampled_from(("198.18.9.9", "::1", "fd00:198:18::0:1", "01.2.3.4", "TCP", "80", "")),
)
json_any = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
# Where `convert.pod` reads (part, key), and a few places it does not.
PLACES = [
    ("pod", "metadata"),
    ("pod", "spec"),
    ("pod", "status"),
    *(("metadata", k) for k in convert._POD_KEEP["metadata"]),
    ("metadata", "managedFields"),
    *(("spec", k) for k in convert._POD_KEEP["spec"]),
    ("spec", "volumes"),
    *(("status", k) for k in convert._POD_KEEP["status"]),
    ("container", "ports"),
    ("container", "env"),
    ("port", "containerPort"),
    ("port", "name"),
    ("port", "protocol"),
    ("podip", "ip"),
    ("owner", "name"),
    ("owner", "kind"),
    ("owner", "controller"),
    ("labels", "pod-template-hash"),
]


def realistic(n: int) -> dict[str, Any]:
    return objects.realistic_pod(
        f"web-{n}", f"ns-{n % 3}", {"app": f"a{n % 4}"}, f"198.18.0.{n + 1}", "node-1", serial=n
    )


def mutate(pod: dict[str, Any], place: tuple[str, str], value: Any, delete: bool) -> None:
    part, key = place
    where: Any = {
        "pod": lambda: pod,
        "metadata": lambda: pod["metadata"],
        "spec": lambda: pod["spec"],
        "status": lambda: pod["status"],
        "container": lambda: pod["spec"]["containers"][0],
        "port": lambda: pod["spec"]["containers"][0]["ports"][0],
        "podip": lambda: pod["status"]["podIPs"][0],
        "owner": lambda: pod["metadata"]["ownerReferences"][0],
        "labels": lambda: pod["metadata"]["labels"],
    }[part]
    try:
        target = where()
    except (KeyError, IndexError, TypeError):
        return  # an earlier mutation took the path away
    if not isinstance(target, dict):
        return
    if delete:
        target.pop(key, None)
    else:
        target[key] = copy.deepcopy(value)


def old_way(item: Any) -> Any:
    """What the store makes of an item the old way: the model, or the error's type."""
    try:
        return convert.pod(item)
    except Exception as exc:
        return type(exc).__name__


def page_of(pods: list[Any], **meta: Any) -> bytes:
    return json.dumps({"kind": "PodList", "metadata": meta, "items": pods}).encode()


mutation = st.tuples(st.sampled_from(PLACES), json_any, st.booleans())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(mutation, max_size=3), min_size=1, max_size=4))
def test_a_page_reads_as_the_old_way_reads_it(mutations: list[list[Any]]) -> None:
    pods = [realistic(n) for n in range(len(mutations))]
    for pod, changes in zip(pods, mutations, strict=True):
        for place, value, delete in changes:
            mutate(pod, place, value, delete)
    data = page_of(pods, resourceVersion="41", **{"continue": "next"})
    typed, version, token = podwire.page(data)
    old, old_version, old_token = podwire.json_page(data)
    assert (version, token) == (old_version, old_token) == ("41", "next")
    assert len(typed) == len(old)
    for new, before in zip(typed, old, strict=True):
        if isinstance(new, model.Pod):  # taken typed: exactly the old model, never an error
            assert new == old_way(before)
            assert store._key(new) == store._key(before)
        else:  # declined: the old way's own item
            assert new == before


@settings(max_examples=200, deadline=None)
@given(st.lists(mutation, max_size=3))
def test_a_watch_line_reads_as_the_old_way_reads_it(changes: list[Any]) -> None:
    pod = realistic(7)
    for place, value, delete in changes:
        mutate(pod, place, value, delete)
    line = json.dumps({"type": "MODIFIED", "object": pod})
    typed = podwire.event(line)
    if typed is not None:
        assert typed[0] == "MODIFIED"
        assert typed[1] == old_way(convert.slim_pod(json.loads(line)["object"]))


def test_realistic_pods_are_taken_typed_and_equal_the_old_model() -> None:
    pods = [realistic(n) for n in range(6)]
    pods[2]["spec"]["initContainers"] = [{"name": "i", "ports": [{"containerPort": 53}]}]
    pods[3]["metadata"]["deletionTimestamp"] = "2026-12-01T11:00:00Z"
    pods[4]["status"]["podIPs"].append({"ip": "fd00:198:18:0::0:5"})
    pods[5]["spec"]["hostNetwork"] = True
    typed, _, token = podwire.page(page_of(pods, resourceVersion="9"))
    assert token is None
    assert all(isinstance(p, model.Pod) for p in typed)
    assert typed == [convert.pod(p) for p in pods]
    assert typed[4].ips == ("198.18.0.5", "fd00:198:18::5")
    assert podwire.event(json.dumps({"type": "ADDED", "object": pods[0]})) == ("ADDED", typed[0])


def test_lines_that_are_no_pod_change_are_left_to_json() -> None:
    status = {"kind": "Status", "status": "Failure", "code": 410, "message": "too old"}
    bookmark = {"kind": "Pod", "metadata": {"resourceVersion": "12"}}
    assert podwire.event(json.dumps({"type": "ERROR", "object": status})) is None
    assert podwire.event(json.dumps({"type": "BOOKMARK", "object": bookmark})) is None
    assert podwire.event(json.dumps({"type": "ADDED", "object": bookmark})) is None  # no name
    assert podwire.event('{"type": "ADDED", "object": {"metadata": {"name": NaN}}}') is None


def test_json_that_only_json_accepts_reads_the_old_way() -> None:
    pod = realistic(1)
    data = page_of([pod]).replace(b'"containerPort": 8080', b'"containerPort": NaN')
    typed, _, _ = podwire.page(data)
    assert typed == podwire.json_page(data)[0]
    assert [p.port for p in old_way(typed[0]).container_ports] == [9090, 9100]  # NaN: no port


class Response:
    def __init__(self, data: bytes) -> None:
        self.data = data


def test_one_malformed_pod_in_a_page_costs_the_others_nothing_and_is_reported() -> None:
    pods = [realistic(n) for n in range(5)]
    pods[1]["status"]["podIPs"] = 7  # convert.pod raises on it
    pods[3]["metadata"]["labels"] = None  # odd but readable: no labels
    pages = [page_of(pods[:3], resourceVersion="5", **{"continue": "c"}), page_of(pods[3:])]

    def list_fn(**kwargs: Any) -> Response:
        return Response(pages[1 if kwargs.get("_continue") else 0])

    relist = watch.list_all("pods", list_fn, 3, convert.slim_pod, watch.PAGES["pods"])
    assert [type(p).__name__ for p in relist.items] == ["Pod", "dict", "Pod", "Pod", "Pod"]
    assert "managedFields" not in relist.items[1]["metadata"]  # trimmed as before
    cluster = store.Store()
    counter = metrics.MALFORMED_OBJECTS.labels("pods")
    before = counter._value.get()
    with structlog.testing.capture_logs() as logs:
        cluster.apply(relist, store.Change())
    assert sorted(cluster.pods) == ["ns-0/web-0", "ns-0/web-3", "ns-1/web-4", "ns-2/web-2"]
    assert cluster.pods["ns-0/web-3"].labels == {}
    assert counter._value.get() == before + 1
    (line,) = [e for e in logs if e["event"] == "object_malformed"]
    assert line["object"] == "ns-1/web-1" and line["error"].startswith("TypeError")


def test_a_watched_pod_deletes_and_updates_the_store_entry_by_its_key() -> None:
    pod = realistic(1)
    cluster = store.Store()
    for kind in ("ADDED", "DELETED"):
        typed = podwire.event(json.dumps({"type": kind, "object": pod}))
        assert typed is not None
        change = store.Change()
        cluster.apply(watch.WatchEvent("pods", kind, typed[1], 0.0), change)
        assert list(change.pods) == ["ns-1/web-1"]
        assert ("ns-1/web-1" in cluster.pods) == (kind == "ADDED")


@pytest.mark.parametrize(
    ("key", "value"),
    [("namespace", ""), ("namespace", None), ("namespace", 5), ("name", None), ("name", 5)],
)
@pytest.mark.parametrize("delete", [False, True])
def test_a_pod_the_store_keys_otherwise_is_left_to_the_old_way(
    key: str, value: Any, delete: bool
) -> None:
    pod = realistic(1)
    mutate(pod, ("metadata", key), value, delete)
    typed, _, _ = podwire.page(page_of([pod, realistic(2)]))
    assert typed[0] == convert.slim_pod(pod) and isinstance(typed[1], model.Pod)
    assert podwire.event(json.dumps({"type": "ADDED", "object": pod})) is None


def test_a_watched_pod_the_typed_path_declines_arrives_the_old_way(
    tmp_path: pathlib.Path,
) -> None:
    """Through a real watch stream: the odd pod comes as its trimmed dict, for the store to
    report; the next pod comes as its model."""
    emu = server.EmulatorThread(bookmark_interval=0.2)
    emu.start()
    emu.write_kubeconfig(str(tmp_path / "kubeconfig"))
    api = clients.agent_client(str(tmp_path / "kubeconfig"))
    got: queue.Queue[watch.WatchEvent | watch.Relist] = queue.Queue()
    reflector = watch.Reflector("pods", rest.lister(api, "pods"), got.put, watch_timeout=30)
    seen: list[watch.WatchEvent | watch.Relist] = []

    def added() -> list[watch.WatchEvent]:
        while not got.empty():
            seen.append(got.get_nowait())
        return [i for i in seen if isinstance(i, watch.WatchEvent) and i.type == "ADDED"]

    reflector.start()
    try:
        wait_for(
            lambda: added() == [] and seen != [] and emu.watch_count == 1,
            timeout=15,
            what="a watch",
        )
        bad = realistic(1)
        bad["status"]["podIPs"] = 7
        emu.insert(bad)
        stored = emu.insert(realistic(2))
        wait_for(lambda: len(added()) == 2, timeout=15, what="both pods' events")
    finally:
        reflector.stop()
        reflector.join(10)
        api.close()
        emu.stop()
    odd, good = added()
    assert isinstance(odd.obj, dict) and "managedFields" not in odd.obj["metadata"]
    assert isinstance(good.obj, model.Pod) and good.obj == convert.pod(stored)
    cluster = store.Store()
    with structlog.testing.capture_logs() as logs:
        for event in (odd, good):
            cluster.apply(event, store.Change())
    assert list(cluster.pods) == ["ns-2/web-2"]
    assert [e["object"] for e in logs if e["event"] == "object_malformed"] == ["ns-1/web-1"]
