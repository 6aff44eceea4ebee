"""Test backdoors and the fault seam: cross-thread insert/remove, injected errors, compaction."""

from __future__ import annotations

import concurrent.futures

import kubernetes.client
import kubernetes.watch
import pytest

from testbed.emulator import server
from tests.support import apiclient


def _pod_obj(name: str, ip: str) -> dict[str, object]:
    body = apiclient.pod(name, {"app": "x"})
    return {"apiVersion": "v1", "kind": "Pod", **body, "status": {"podIP": ip, "phase": "Running"}}


def test_insert_from_many_threads_gets_unique_rvs(
    emulator: server.EmulatorThread, core: kubernetes.client.CoreV1Api
) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        stored = list(
            pool.map(lambda i: emulator.insert(_pod_obj(f"p{i}", f"10.0.0.{i}")), range(40))
        )
    rvs = {int(s["metadata"]["resourceVersion"]) for s in stored}
    assert len(rvs) == 40
    pods = core.list_namespaced_pod("default").items
    assert len(pods) == 40
    # insert keeps status as given (a create through the API would reset it).
    assert {p.status.pod_ip for p in pods} == {f"10.0.0.{i}" for i in range(40)}
    again = emulator.insert(_pod_obj("p0", "10.9.9.9"))
    assert again["metadata"]["uid"] == stored[0]["metadata"]["uid"]
    assert core.read_namespaced_pod("p0", "default").status.pod_ip == "10.9.9.9"
    emulator.remove("v1", "Pod", "default", "p0")
    assert len(core.list_namespaced_pod("default").items) == 39


def test_injected_error_status(
    emulator: server.EmulatorThread, core: kubernetes.client.CoreV1Api
) -> None:
    emulator.faults.error_status = 500
    with pytest.raises(kubernetes.client.ApiException) as info:
        core.list_namespaced_pod("default")
    assert info.value.status == 500
    assert apiclient.status_of(info.value)["reason"] == "InternalError"
    emulator.faults.reset()
    assert core.list_namespaced_pod("default").items == []


def test_compact_expires_old_resource_versions(
    emulator: server.EmulatorThread, core: kubernetes.client.CoreV1Api
) -> None:
    rv = core.list_namespaced_pod("default").metadata.resource_version
    core.create_namespaced_pod("default", apiclient.pod("a"))
    emulator.compact()
    with pytest.raises(kubernetes.client.ApiException) as info:
        list(
            kubernetes.watch.Watch().stream(
                core.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=5
            )
        )
    assert info.value.status == 410
