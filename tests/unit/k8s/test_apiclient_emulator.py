"""The agent's own API client (`agent.k8s.apiclient`, built by `clients.agent_client` as the
agent builds it) against the API emulator: LIST in pages, watch with bookmarks resumed from its
resourceVersion, 410 Gone answered by a relist, error statuses as `ApiError`, Lease and Event
writes; a kubeconfig with a credential plugin falls back to the official client; and the agent
process never imports the official package."""

from __future__ import annotations

import json
import pathlib
import queue
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from agent import model
from agent.k8s import apiclient, clients, errors, events, lease, rest, watch
from testbed.emulator import server
from tests.support.polling import wait_for


@pytest.fixture
def emulator() -> Iterator[server.EmulatorThread]:
    emu = server.EmulatorThread(bookmark_interval=0.2)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def kubeconfig(emulator: server.EmulatorThread, tmp_path: pathlib.Path) -> str:
    path = tmp_path / "kubeconfig"
    emulator.write_kubeconfig(str(path))
    return str(path)


@pytest.fixture
def api(kubeconfig: str) -> Iterator[rest.Api]:
    client = clients.agent_client(kubeconfig)
    try:
        yield client
    finally:
        client.close()


def pod(name: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}], "nodeName": "node-1"},
    }


def test_the_agent_client_is_podseg_s_own_and_lists_in_pages(
    emulator: server.EmulatorThread, api: rest.Api
) -> None:
    assert isinstance(api, apiclient.Client)
    for i in range(7):
        emulator.insert(pod(f"p{i}"))
    listed = watch.list_all("pods", rest.lister(api, "pods"), page_size=3)
    assert sorted(p["metadata"]["name"] for p in listed.items) == [f"p{i}" for i in range(7)]
    assert listed.resource_version == str(emulator.resource_version)


def test_the_watch_resumes_from_its_version_and_relists_after_410(
    emulator: server.EmulatorThread, api: rest.Api
) -> None:
    emulator.insert(pod("first"))
    got: queue.Queue[watch.WatchEvent | watch.Relist] = queue.Queue()
    failures: list[int | None] = []  # statuses of failures other than 410 (which relists)
    reflector = watch.Reflector(
        "pods", rest.lister(api, "pods"), got.put, watch_timeout=30, on_failure=failures.append
    )
    reflector.start()
    seen: list[watch.WatchEvent | watch.Relist] = []

    def until(check: Any, what: str) -> None:
        def poll() -> bool:
            while not got.empty():
                seen.append(got.get_nowait())
            return bool(check())

        wait_for(poll, timeout=15, what=what)

    def relists() -> int:
        return sum(isinstance(item, watch.Relist) for item in seen)

    def added() -> list[str]:
        # pods arrive decoded into their model (agent.k8s.podwire)
        return [
            item.obj.name
            for item in seen
            if isinstance(item, watch.WatchEvent) and item.type == "ADDED"
            if isinstance(item.obj, model.Pod)
        ]

    try:
        until(lambda: relists() == 1 and emulator.watch_count == 1, "first list, then a watch")
        emulator.insert(pod("second"))
        until(lambda: "second" in added(), "the watch event of a new pod")
        # The server ends the stream: the watch goes on from the last version, no relist, no
        # event twice.
        emulator.drop_watches()
        emulator.insert(pod("third"))
        until(lambda: "third" in added(), "an event after the stream was cut")
        assert relists() == 1
        assert added() == ["second", "third"]
        # The server restarts with new versions and no history: the resume gets 410 Gone and
        # the reflector lists again.
        emulator.insert(pod("fourth"))
        until(lambda: "fourth" in added(), "the fourth pod's event")
        emulator.restart()
        until(lambda: relists() == 2, "a relist after 410 Gone")
        last = [item for item in seen if isinstance(item, watch.Relist)][-1]
        names = {p.name for p in last.items}  # models: the reflector decodes pods typed
        assert names == {"first", "second", "third", "fourth"}
        assert failures == []
    finally:
        reflector.stop()
        reflector.join(10)


def test_error_statuses_are_api_errors_with_the_status_body(
    emulator: server.EmulatorThread, api: rest.Api
) -> None:
    emulator.faults.error_status = 503
    with pytest.raises(apiclient.ApiError) as caught:
        rest.lister(api, "pods")(limit=5)
    assert caught.value.status == 503
    assert json.loads(caught.value.body)["kind"] == "Status"
    assert errors.status_code(caught.value) == 503
    assert errors.describe(caught.value).startswith("HTTP 503")
    emulator.faults.reset()
    assert lease.get(api, "podseg-system", "nothing-here") is None  # 404 -> None


def test_lease_and_event_writes(emulator: server.EmulatorThread, api: rest.Api) -> None:
    emulator.insert(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "podseg-system"}}
    )
    body = lease.body("podseg-system", "node-1", {"holderIdentity": "node-1"})
    created = lease.write(api, "podseg-system", body, create=True)
    assert created["spec"]["holderIdentity"] == "node-1"
    stale = lease.body("podseg-system", "node-1", {"holderIdentity": "x"}, resource_version="1")
    with pytest.raises(apiclient.ApiError) as caught:
        lease.write(api, "podseg-system", stale, create=False)
    assert caught.value.status == 409
    again = lease.body(
        "podseg-system",
        "node-1",
        {"holderIdentity": "node-2"},
        resource_version=created["metadata"]["resourceVersion"],
    )
    assert lease.write(api, "podseg-system", again, create=False)["spec"]["holderIdentity"] == (
        "node-2"
    )
    emulator.insert(pod("target"))
    recorder = events.Recorder(api, "node-1")
    recorder.post_now("default", recorder_body("target"))  # logs failures, never raises
    with urllib.request.urlopen(emulator.url + "/api/v1/namespaces/default/events") as found:
        posted = [e for e in json.loads(found.read())["items"] if e.get("reason") == "Tested"]
    assert [e["involvedObject"]["name"] for e in posted] == ["target"]


def recorder_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.test", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": name, "namespace": "default"},
        "reason": "Tested",
        "message": "by the agent's own client",
        "type": "Normal",
        "source": {"component": "podseg", "host": "node-1"},
    }


def test_a_kubeconfig_with_a_credential_plugin_goes_to_the_official_client(
    emulator: server.EmulatorThread, tmp_path: pathlib.Path
) -> None:
    token = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential"}
    token["status"] = {"token": "from-a-plugin"}  # type: ignore[assignment]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": emulator.url}}],
        "users": [
            {
                "name": "u",
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1",
                        "command": sys.executable,
                        "args": ["-c", f"print({json.dumps(json.dumps(token))})"],
                        "interactiveMode": "Never",
                    }
                },
            }
        ],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    emulator.insert(pod("p"))
    api = clients.agent_client(str(path))
    try:
        assert not isinstance(api, apiclient.Client)
        listed = watch.list_all("pods", rest.lister(api, "pods"))
        assert [p["metadata"]["name"] for p in listed.items] == ["p"]
    finally:
        api.close()


# The agent's start: its command line and app, its client, one LIST; then what it imported.
AGENT_START = """
import json, sys
import agent.app, agent.cli
from agent.k8s import clients, rest, watch
api = clients.agent_client(sys.argv[1])
listed = watch.list_all("pods", rest.lister(api, "pods"))
heavy = ("kubernetes", "pydantic", "oauthlib", "requests", "websocket", "jsonschema")
print(json.dumps([len(listed.items), sorted(m for m in heavy if m in sys.modules)]))
"""


def test_the_agent_process_never_imports_the_official_client(
    emulator: server.EmulatorThread, kubeconfig: str
) -> None:
    emulator.insert(pod("p"))
    result = subprocess.run(
        [sys.executable, "-c", AGENT_START, kubeconfig],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [1, []]
