"""The emulator's "restart with new resourceVersions" fault, through the official client:
objects survive with new, higher versions, open watches end, and every resume from a version
handed out before the restart gets 410 Expired (so a client must relist)."""

from __future__ import annotations

import pathlib
import threading

import kubernetes.client
import kubernetes.watch
import pytest

from testbed.emulator import server
from tests.support import apiclient
from tests.support.polling import wait_for


def test_restart_keeps_objects_renumbers_them_and_expires_every_resume(
    emulator: server.EmulatorThread, tmp_path: pathlib.Path
) -> None:
    client = apiclient.client_for(emulator, tmp_path)
    core = kubernetes.client.CoreV1Api(client)
    for i in range(3):
        core.create_namespaced_pod("default", apiclient.pod(f"p{i}", {"i": str(i)}))
    before = core.list_namespaced_pod("default")
    old_rv = before.metadata.resource_version
    old_versions = {p.metadata.name: int(p.metadata.resource_version) for p in before.items}

    ended = threading.Event()

    def watch_until_closed() -> None:
        stream = kubernetes.watch.Watch().stream(
            core.list_namespaced_pod, "default", resource_version=old_rv, timeout_seconds=30
        )
        for _ in stream:
            pass
        ended.set()

    watcher = threading.Thread(target=watch_until_closed, daemon=True)
    watcher.start()
    wait_for(lambda: emulator.watch_count >= 1, what="watch open")
    assert emulator.restart() >= 1
    wait_for(ended.is_set, what="the open watch ended by the restart")

    after = core.list_namespaced_pod("default")
    assert {p.metadata.name: p.metadata.labels for p in after.items} == {
        p.metadata.name: p.metadata.labels for p in before.items
    }
    for p in after.items:
        assert int(p.metadata.resource_version) > max(old_versions.values())
    with pytest.raises(kubernetes.client.ApiException) as info:
        list(
            kubernetes.watch.Watch().stream(
                core.list_namespaced_pod, "default", resource_version=old_rv, timeout_seconds=5
            )
        )
    assert info.value.status == 410
    # A watch from the new list's version works and sees new writes.
    new_rv = after.metadata.resource_version
    core.delete_namespaced_pod("p0", "default")
    events = kubernetes.watch.Watch().stream(
        core.list_namespaced_pod, "default", resource_version=new_rv, timeout_seconds=5
    )
    first = next(iter(events))
    assert (first["type"], first["object"].metadata.name) == ("DELETED", "p0")
    client.close()
