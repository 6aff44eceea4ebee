"""Watch semantics through the official client: resume, selectors, timeouts, bookmarks, 410."""

from __future__ import annotations

import http.client
import json
import pathlib
import time
import urllib.parse
from collections.abc import Callable

import kubernetes.client
import kubernetes.watch
import pytest

from testbed.emulator import server
from tests.support import apiclient


def test_watch_from_list_rv_does_not_replay(
    emulator: server.EmulatorThread, core: kubernetes.client.CoreV1Api
) -> None:
    core.create_namespaced_pod("default", apiclient.pod("old"))
    rv = core.list_namespaced_pod("default").metadata.resource_version
    core.create_namespaced_pod("default", apiclient.pod("new"))
    core.patch_namespaced_pod("old", "default", {"metadata": {"labels": {"x": "1"}}})
    recorder = apiclient.WatchRecorder(
        emulator, core.list_namespaced_pod, namespace="default", resource_version=rv
    )
    # Events made before the watch started but after the list come from history, in order.
    assert [(t, n) for t, n, _ in recorder.take(2)] == [("ADDED", "new"), ("MODIFIED", "old")]
    core.delete_namespaced_pod("new", "default")
    ((kind, name, raw),) = recorder.take(1)
    assert (kind, name) == ("DELETED", "new")
    assert int(raw["metadata"]["resourceVersion"]) > int(rv)
    recorder.stop()


def test_watch_without_rv_starts_with_synthetic_added(
    emulator: server.EmulatorThread, core: kubernetes.client.CoreV1Api
) -> None:
    core.create_namespaced_pod("default", apiclient.pod("a"))
    core.create_namespaced_pod("default", apiclient.pod("b"))
    recorder = apiclient.WatchRecorder(emulator, core.list_namespaced_pod, namespace="default")
    assert sorted((t, n) for t, n, _ in recorder.take(2)) == [("ADDED", "a"), ("ADDED", "b")]
    core.create_namespaced_pod("default", apiclient.pod("c"))
    assert [(t, n) for t, n, _ in recorder.take(1)] == [("ADDED", "c")]


def test_label_selector_transitions(
    emulator: server.EmulatorThread, core: kubernetes.client.CoreV1Api
) -> None:
    rv = core.list_namespaced_pod("default").metadata.resource_version
    recorder = apiclient.WatchRecorder(
        emulator,
        core.list_namespaced_pod,
        namespace="default",
        resource_version=rv,
        label_selector="app in (web,api),tier!=cache",
    )
    core.create_namespaced_pod("default", apiclient.pod("p", {"app": "db"}))  # not matching
    core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"app": "web"}}})
    core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"note": "x"}}})
    core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"tier": "cache"}}})
    core.delete_namespaced_pod("p", "default")  # already out of the selection
    core.create_namespaced_pod("default", apiclient.pod("q", {"app": "api"}))
    events = recorder.take(4)
    assert [(t, n) for t, n, _ in events] == [
        ("ADDED", "p"),
        ("MODIFIED", "p"),
        ("DELETED", "p"),
        ("ADDED", "q"),
    ]
    # The DELETED for "stopped matching" carries the last matching state.
    assert "tier" not in events[2][2]["metadata"]["labels"]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", ["a"]),
        ("app==web", ["a"]),
        ("app!=web", ["b", "c"]),
        ("app in (web, db)", ["a", "b"]),
        ("app notin (web)", ["b", "c"]),
        ("app", ["a", "b"]),
        ("!app", ["c"]),
        ("app,env=prod", ["a"]),
        ("", ["a", "b", "c"]),
    ],
)
def test_label_selector_on_list(
    core: kubernetes.client.CoreV1Api, selector: str, expected: list[str]
) -> None:
    core.create_namespaced_pod("default", apiclient.pod("a", {"app": "web", "env": "prod"}))
    core.create_namespaced_pod("default", apiclient.pod("b", {"app": "db"}))
    core.create_namespaced_pod("default", apiclient.pod("c", {"other": "x"}))
    items = core.list_namespaced_pod("default", label_selector=selector).items
    assert [p.metadata.name for p in items] == expected


def test_bad_selectors_are_400(core: kubernetes.client.CoreV1Api) -> None:
    for kwargs in ({"label_selector": "app in ("}, {"field_selector": "spec.bogus=x"}):
        with pytest.raises(kubernetes.client.ApiException) as info:
            core.list_namespaced_pod("default", **kwargs)
        assert info.value.status == 400
        assert apiclient.status_of(info.value)["reason"] == "BadRequest"


def test_field_selectors_on_list_and_watch(
    emulator: server.EmulatorThread, core: kubernetes.client.CoreV1Api
) -> None:
    core.create_namespace({"metadata": {"name": "other"}})
    core.create_namespaced_pod("default", apiclient.pod("a", node="node-1"))
    core.create_namespaced_pod("default", apiclient.pod("b", node="node-2"))
    core.create_namespaced_pod("other", apiclient.pod("c", node="node-1"))

    def names(**kwargs: str) -> list[str]:
        return [p.metadata.name for p in core.list_pod_for_all_namespaces(**kwargs).items]

    assert names(field_selector="spec.nodeName=node-1") == ["a", "c"]
    assert names(field_selector="spec.nodeName!=node-1") == ["b"]
    assert names(field_selector="metadata.name==b") == ["b"]
    assert names(field_selector="metadata.namespace=other") == ["c"]
    assert names(field_selector="spec.nodeName=node-1,metadata.namespace!=other") == ["a"]

    recorder = apiclient.WatchRecorder(
        emulator, core.list_pod_for_all_namespaces, field_selector="spec.nodeName=node-2"
    )
    assert [(t, n) for t, n, _ in recorder.take(1)] == [("ADDED", "b")]
    core.create_namespaced_pod("other", apiclient.pod("d", node="node-1"))
    core.create_namespaced_pod("other", apiclient.pod("e", node="node-2"))
    assert [(t, n) for t, n, _ in recorder.take(1)] == [("ADDED", "e")]


def test_timeout_seconds_ends_the_stream(core: kubernetes.client.CoreV1Api) -> None:
    start = time.monotonic()
    events = list(
        kubernetes.watch.Watch().stream(
            core.list_namespaced_pod, "default", resource_version="1", timeout_seconds=1
        )
    )
    elapsed = time.monotonic() - start
    assert events == []
    assert 0.9 <= elapsed < 5


def test_bookmarks_only_when_asked(
    emulator: server.EmulatorThread, core: kubernetes.client.CoreV1Api
) -> None:
    core.create_namespaced_pod("default", apiclient.pod("a"))
    rv = core.list_namespaced_pod("default").metadata.resource_version
    recorder = apiclient.WatchRecorder(
        emulator,
        core.list_namespaced_pod,
        namespace="default",
        resource_version=rv,
        allow_watch_bookmarks=True,
    )
    ((kind, _, raw),) = recorder.take(1)
    assert kind == "BOOKMARK"
    assert raw == {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": rv}}
    core.create_namespaced_pod("default", apiclient.pod("b"))
    later = [e for e in recorder.take(3) if e[0] == "BOOKMARK"]
    assert int(later[-1][2]["metadata"]["resourceVersion"]) > int(rv)

    plain = list(
        kubernetes.watch.Watch().stream(
            core.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=1
        )
    )
    assert [(e["type"], e["raw_object"]["metadata"]["name"]) for e in plain] == [("ADDED", "b")]


def test_expired_resource_version_gets_410(
    make_emulator: Callable[..., server.EmulatorThread], tmp_path: pathlib.Path
) -> None:
    emu = make_emulator(history=3)
    client = apiclient.client_for(emu, tmp_path)
    core = kubernetes.client.CoreV1Api(client)
    rv = core.list_namespaced_pod("default").metadata.resource_version
    for i in range(5):
        core.create_namespaced_pod("default", apiclient.pod(f"p{i}"))
    with pytest.raises(kubernetes.client.ApiException) as info:
        list(
            kubernetes.watch.Watch().stream(
                core.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=5
            )
        )
    assert info.value.status == 410

    # The raw stream: HTTP 200, chunked, exactly one ERROR line with an Expired Status.
    url = urllib.parse.urlsplit(emu.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    conn.request("GET", f"/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Transfer-Encoding") == "chunked"
    lines = resp.read().decode().splitlines()
    conn.close()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410
    assert event["object"]["reason"] == "Expired"
    assert event["object"]["kind"] == "Status"

    # A recent RV inside the window still resumes.
    recent = core.list_namespaced_pod("default").metadata.resource_version
    assert (
        list(
            kubernetes.watch.Watch().stream(
                core.list_namespaced_pod, "default", resource_version=recent, timeout_seconds=1
            )
        )
        == []
    )
    client.close()


def test_raw_stream_is_one_json_object_per_line(
    emulator: server.EmulatorThread, core: kubernetes.client.CoreV1Api
) -> None:
    rv = core.list_namespaced_pod("default").metadata.resource_version
    url = urllib.parse.urlsplit(emulator.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    conn.request("GET", f"/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}")
    resp = conn.getresponse()
    assert resp.getheader("Content-Type", "").startswith("application/json")
    core.create_namespaced_pod("default", apiclient.pod("a"))
    # Flushed per event: the line arrives while the stream is still open.
    line = resp.fp.readline()
    size = int(line, 16)
    chunk = resp.fp.read(size)
    assert chunk.endswith(b"\n") and chunk.count(b"\n") == 1
    event = json.loads(chunk)
    assert event["type"] == "ADDED"
    assert event["object"]["kind"] == "Pod" and event["object"]["apiVersion"] == "v1"
    assert event["object"]["metadata"]["name"] == "a"
    conn.close()


def test_drop_watches_ends_streams(
    emulator: server.EmulatorThread, core: kubernetes.client.CoreV1Api
) -> None:
    recorder = apiclient.WatchRecorder(emulator, core.list_namespaced_pod, namespace="default")
    assert emulator.drop_watches() == 1
    recorder.join()
    assert recorder.error is None
    apiclient.wait_for(lambda: emulator.watch_count == 0, what="watch removal")
