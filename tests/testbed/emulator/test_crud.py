"""CRUD, patch, status subresource, errors and pagination through the official client."""

from __future__ import annotations

import json
import pathlib
import urllib.request
from collections.abc import Callable
from typing import Any

import kubernetes.client
import pytest

from testbed.emulator import server
from tests.support import apiclient

ApiException = kubernetes.client.ApiException


def test_pod_crud_fills_metadata_and_defaults(core: kubernetes.client.CoreV1Api) -> None:
    created = core.create_namespaced_pod("default", apiclient.pod("web", {"app": "web"}))
    meta = created.metadata
    assert meta.namespace == "default"
    assert meta.uid and meta.creation_timestamp is not None
    assert meta.generation == 1
    assert int(meta.resource_version) > 0
    assert created.status.phase == "Pending"
    assert created.spec.restart_policy == "Always"

    got = core.read_namespaced_pod("web", "default")
    assert got.metadata.uid == meta.uid
    listed = core.list_namespaced_pod("default")
    assert [p.metadata.name for p in listed.items] == ["web"]
    assert int(listed.metadata.resource_version) >= int(meta.resource_version)

    got.spec.containers[0].image = "nginx:1.28"
    replaced = core.replace_namespaced_pod("web", "default", got)
    assert replaced.spec.containers[0].image == "nginx:1.28"
    assert int(replaced.metadata.resource_version) > int(meta.resource_version)
    assert replaced.metadata.generation == 2

    deleted = core.delete_namespaced_pod("web", "default")
    assert deleted.metadata.name == "web"  # pods return the deleted object
    with pytest.raises(ApiException) as info:
        core.read_namespaced_pod("web", "default")
    assert info.value.status == 404


def test_generate_name(core: kubernetes.client.CoreV1Api) -> None:
    body = apiclient.pod("x")
    body["metadata"] = {"generateName": "worker-"}
    created = core.create_namespaced_pod("default", body)
    assert created.metadata.name.startswith("worker-")
    assert len(created.metadata.name) == len("worker-") + 5


def test_resource_version_is_global_and_monotonic(
    core: kubernetes.client.CoreV1Api, net: kubernetes.client.NetworkingV1Api
) -> None:
    a = core.create_namespaced_pod("default", apiclient.pod("a"))
    b = net.create_namespaced_network_policy("default", apiclient.netpol("p", {"podSelector": {}}))
    c = core.create_namespace({"metadata": {"name": "other"}})
    rvs = [int(o.metadata.resource_version) for o in (a, b, c)]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3
    assert core.list_namespaced_pod("default").metadata.resource_version == str(rvs[-1])


def test_namespace_node_service_event_crud(core: kubernetes.client.CoreV1Api) -> None:
    ns = core.create_namespace({"metadata": {"name": "team-a"}})
    assert ns.status.phase == "Active"
    assert ns.metadata.labels["kubernetes.io/metadata.name"] == "team-a"
    assert "team-a" in [n.metadata.name for n in core.list_namespace().items]

    node = core.create_node({"metadata": {"name": "node-1", "labels": {"zone": "a"}}})
    node.metadata.labels["zone"] = "b"
    assert core.replace_node("node-1", node).metadata.labels["zone"] == "b"
    assert [n.metadata.name for n in core.list_node().items] == ["node-1"]
    core.delete_node("node-1")
    assert core.list_node().items == []

    svc = core.create_namespaced_service(
        "team-a",
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    )
    assert svc.spec.cluster_ip and svc.spec.ports[0].protocol == "TCP"
    assert core.read_namespaced_service("web", "team-a").spec.selector == {"app": "web"}
    assert core.delete_namespaced_service("web", "team-a").metadata.name == "web"

    event = core.create_namespaced_event(
        "team-a",
        {
            "metadata": {"name": "web.1"},
            "involvedObject": {"kind": "Pod", "namespace": "team-a", "name": "web"},
            "reason": "PolicyInvalid",
            "message": "bad policy",
            "type": "Warning",
        },
    )
    assert event.reason == "PolicyInvalid"
    listed = core.list_namespaced_event("team-a", field_selector="reason=PolicyInvalid")
    assert [e.message for e in listed.items] == ["bad policy"]
    core.delete_namespaced_event("web.1", "team-a")
    assert core.list_event_for_all_namespaces().items == []


def test_networkpolicy_and_endpointslice_crud(
    net: kubernetes.client.NetworkingV1Api, disc: kubernetes.client.DiscoveryV1Api
) -> None:
    spec = {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"ports": [{"port": 5432}]}]}
    created = net.create_namespaced_network_policy("default", apiclient.netpol("db", spec))
    assert created.spec.policy_types == ["Ingress"]  # defaulted like the real server
    assert created.spec.ingress[0].ports[0].protocol == "TCP"
    assert [p.metadata.name for p in net.list_network_policy_for_all_namespaces().items] == ["db"]
    created.spec.ingress[0].ports[0].port = 5433
    replaced = net.replace_namespaced_network_policy("db", "default", created)
    assert replaced.spec.ingress[0].ports[0].port == 5433
    assert replaced.metadata.generation == 2
    status = net.delete_namespaced_network_policy("db", "default")
    assert status["status"] == "Success"
    assert net.list_namespaced_network_policy("default").items == []

    slice_body = {
        "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.0.5"], "conditions": {"ready": True}}],
        "ports": [{"name": "http", "port": 8080}],
    }
    es = disc.create_namespaced_endpoint_slice("default", slice_body)
    assert es.ports[0].protocol == "TCP"
    got = disc.read_namespaced_endpoint_slice("web-abc", "default")
    assert got.endpoints[0].addresses == ["10.1.0.5"]
    listed = disc.list_endpoint_slice_for_all_namespaces(
        label_selector="kubernetes.io/service-name=web"
    )
    assert [s.metadata.name for s in listed.items] == ["web-abc"]
    disc.delete_namespaced_endpoint_slice("web-abc", "default")
    assert disc.list_namespaced_endpoint_slice("default").items == []


def test_already_exists_status_shape(core: kubernetes.client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", apiclient.pod("dup"))
    with pytest.raises(ApiException) as info:
        core.create_namespaced_pod("default", apiclient.pod("dup"))
    assert info.value.status == 409
    assert apiclient.status_of(info.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "dup" already exists',
        "reason": "AlreadyExists",
        "details": {"name": "dup", "kind": "pods"},
        "code": 409,
    }


def test_not_found_status_shape(net: kubernetes.client.NetworkingV1Api) -> None:
    with pytest.raises(ApiException) as info:
        net.read_namespaced_network_policy("nope", "default")
    assert info.value.status == 404
    assert apiclient.status_of(info.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'networkpolicies.networking.k8s.io "nope" not found',
        "reason": "NotFound",
        "details": {"name": "nope", "group": "networking.k8s.io", "kind": "networkpolicies"},
        "code": 404,
    }


def test_stale_replace_conflicts(core: kubernetes.client.CoreV1Api) -> None:
    first = core.create_namespaced_pod("default", apiclient.pod("p", {"v": "1"}))
    core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"v": "2"}}})
    first.metadata.labels["v"] = "3"
    with pytest.raises(ApiException) as info:
        core.replace_namespaced_pod("p", "default", first)
    assert info.value.status == 409
    body = apiclient.status_of(info.value)
    assert body["reason"] == "Conflict"
    assert body["message"] == (
        'Operation cannot be fulfilled on pods "p": the object has been modified; please apply '
        "your changes to the latest version and try again"
    )
    assert body["details"] == {"name": "p", "kind": "pods"}
    assert core.read_namespaced_pod("p", "default").metadata.labels == {"v": "2"}


def test_unchanged_replace_is_a_noop(core: kubernetes.client.CoreV1Api) -> None:
    created = core.create_namespaced_pod("default", apiclient.pod("p"))
    again = core.replace_namespaced_pod("p", "default", created)
    assert again.metadata.resource_version == created.metadata.resource_version


def test_merge_strategic_and_json_patch_of_labels(core: kubernetes.client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", apiclient.pod("p", {"a": "1", "b": "2"}))
    merged = core.patch_namespaced_pod(
        "p",
        "default",
        {"metadata": {"labels": {"a": None, "c": "3"}}},
        _content_type="application/merge-patch+json",
    )
    assert merged.metadata.labels == {"b": "2", "c": "3"}
    strategic = core.patch_namespaced_pod(
        "p", "default", {"metadata": {"labels": {"d": "4"}, "annotations": {"note": "x"}}}
    )
    assert strategic.metadata.labels == {"b": "2", "c": "3", "d": "4"}
    assert strategic.metadata.annotations == {"note": "x"}
    jsonpatched = core.patch_namespaced_pod(
        "p",
        "default",
        [
            {"op": "remove", "path": "/metadata/labels/b"},
            {"op": "replace", "path": "/metadata/labels/c", "value": "33"},
        ],
    )
    assert jsonpatched.metadata.labels == {"c": "33", "d": "4"}
    with pytest.raises(ApiException) as info:
        core.patch_namespaced_pod(
            "p", "default", [{"op": "test", "path": "/metadata/labels/c", "value": "0"}]
        )
    assert info.value.status == 422


def test_patch_with_stale_resource_version_conflicts(core: kubernetes.client.CoreV1Api) -> None:
    created = core.create_namespaced_pod("default", apiclient.pod("p"))
    core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"x": "1"}}})
    stale = {"metadata": {"resourceVersion": created.metadata.resource_version, "labels": {}}}
    with pytest.raises(ApiException) as info:
        core.patch_namespaced_pod("p", "default", stale)
    assert info.value.status == 409


def test_pod_status_subresource(core: kubernetes.client.CoreV1Api) -> None:
    created = core.create_namespaced_pod("default", apiclient.pod("p", node="node-1"))
    patched = core.patch_namespaced_pod_status(
        "p",
        "default",
        {"status": {"phase": "Running", "podIP": "10.1.0.7", "podIPs": [{"ip": "10.1.0.7"}]}},
    )
    assert patched.status.pod_ip == "10.1.0.7"
    assert [ip.ip for ip in patched.status.pod_ips] == ["10.1.0.7"]
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)

    # A status write cannot change spec or labels; a main-resource write cannot change status.
    body = core.read_namespaced_pod("p", "default")
    body.metadata.labels = {"sneaky": "yes"}
    body.status.phase = "Failed"
    after_status_put = core.replace_namespaced_pod_status("p", "default", body)
    assert after_status_put.status.phase == "Failed"
    assert not after_status_put.metadata.labels
    body = core.read_namespaced_pod("p", "default")
    body.status.phase = "Succeeded"
    body.metadata.labels = {"app": "x"}
    after_put = core.replace_namespaced_pod("p", "default", body)
    assert after_put.status.phase == "Failed"
    assert after_put.metadata.labels == {"app": "x"}
    # Creating a pod ignores status, as the real server does.
    withstatus = apiclient.pod("q")
    withstatus["status"] = {"podIP": "10.9.9.9"}
    assert core.create_namespaced_pod("default", withstatus).status.pod_ip is None


def test_pod_spec_is_immutable_except_images(core: kubernetes.client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", apiclient.pod("p", node="node-1"))
    with pytest.raises(ApiException) as info:
        core.patch_namespaced_pod("p", "default", {"spec": {"nodeName": "node-2"}})
    assert info.value.status == 422
    assert apiclient.status_of(info.value)["details"]["causes"][0]["field"] == "spec"


def test_namespace_must_exist(core: kubernetes.client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as info:
        core.create_namespaced_pod("missing", apiclient.pod("p"))
    assert info.value.status == 404
    assert apiclient.status_of(info.value)["message"] == 'namespaces "missing" not found'


def test_namespace_deletion_cascades(
    emulator: server.EmulatorThread,
    core: kubernetes.client.CoreV1Api,
    net: kubernetes.client.NetworkingV1Api,
) -> None:
    core.create_namespace({"metadata": {"name": "doomed"}})
    core.create_namespaced_pod("doomed", apiclient.pod("p1"))
    net.create_namespaced_network_policy("doomed", apiclient.netpol("np", {"podSelector": {}}))
    core.create_namespaced_pod("default", apiclient.pod("survivor"))
    rv = core.list_pod_for_all_namespaces().metadata.resource_version
    recorder = apiclient.WatchRecorder(
        emulator, core.list_pod_for_all_namespaces, resource_version=rv
    )
    core.delete_namespace("doomed")
    assert [(t, n) for t, n, _ in recorder.take(1)] == [("DELETED", "p1")]
    assert core.list_namespaced_pod("doomed").items == []
    assert net.list_namespaced_network_policy("doomed").items == []
    assert [p.metadata.name for p in core.list_pod_for_all_namespaces().items] == ["survivor"]
    with pytest.raises(ApiException) as info:
        core.read_namespace("doomed")
    assert info.value.status == 404
    with pytest.raises(ApiException) as info:
        core.delete_namespace("default")
    assert info.value.status == 403


def test_limit_and_continue(core: kubernetes.client.CoreV1Api) -> None:
    for i in range(5):
        core.create_namespaced_pod("default", apiclient.pod(f"p{i}"))
    page = core.list_namespaced_pod("default", limit=2)
    names = [p.metadata.name for p in page.items]
    rv = page.metadata.resource_version
    assert names == ["p0", "p1"]
    assert page.metadata.remaining_item_count == 3
    core.create_namespaced_pod("default", apiclient.pod("late"))  # must not shift pages
    while page.metadata._continue:
        page = core.list_namespaced_pod("default", limit=2, _continue=page.metadata._continue)
        assert page.metadata.resource_version == rv
        names += [p.metadata.name for p in page.items]
    # "late" sorts before the first page's last key, so a consistent walk never shows it.
    assert names == ["p0", "p1", "p2", "p3", "p4"]
    with pytest.raises(ApiException) as info:
        core.list_namespaced_pod("default", limit=2, _continue="garbage!")
    assert info.value.status == 400
    # Across namespaces, unfiltered (the count of what is left is taken without matching).
    core.create_namespace({"metadata": {"name": "other"}})
    core.create_namespaced_pod("other", apiclient.pod("o1"))
    page = core.list_pod_for_all_namespaces(limit=4)
    assert page.metadata.remaining_item_count == 3
    seen = [p.metadata.name for p in page.items]
    while page.metadata._continue:
        page = core.list_pod_for_all_namespaces(limit=4, _continue=page.metadata._continue)
        seen += [p.metadata.name for p in page.items]
    assert seen == ["late", "p0", "p1", "p2", "p3", "p4", "o1"]
    assert page.metadata.remaining_item_count is None


def test_discovery_and_health(emulator: server.EmulatorThread) -> None:
    def get(path: str) -> Any:
        with urllib.request.urlopen(emulator.url + path, timeout=5) as resp:
            body = resp.read()
            return (
                json.loads(body) if resp.headers.get_content_type() == "application/json" else body
            )

    assert get("/healthz") == b"ok"
    assert get("/readyz") == b"ok"
    assert get("/version")["major"] == "1"
    assert get("/api")["versions"] == ["v1"]
    groups = {g["name"] for g in get("/apis")["groups"]}
    assert groups == {
        "networking.k8s.io",
        "discovery.k8s.io",
        "coordination.k8s.io",
        "apiextensions.k8s.io",
    }
    core_names = {r["name"] for r in get("/api/v1")["resources"]}
    assert {"pods", "pods/status", "namespaces", "nodes", "services", "events"} <= core_names
    netres = get("/apis/networking.k8s.io/v1")["resources"]
    assert [(r["name"], r["namespaced"]) for r in netres] == [("networkpolicies", True)]
    assert get("/apis/discovery.k8s.io/v1")["resources"][0]["kind"] == "EndpointSlice"
    leases = get("/apis/coordination.k8s.io/v1")["resources"]
    assert [(r["name"], r["namespaced"]) for r in leases] == [("leases", True)]


def test_unknown_resource_is_a_404_status(emulator: server.EmulatorThread) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(emulator.url + "/api/v1/namespaces/default/widgets", timeout=5)
    assert info.value.code == 404
    body = json.loads(info.value.read())
    assert body["reason"] == "NotFound" and body["kind"] == "Status"


def test_insert_bypasses_validation_and_notifies(
    emulator: server.EmulatorThread, net: kubernetes.client.NetworkingV1Api
) -> None:
    bad = apiclient.netpol("legacy", {"podSelector": {}, "policyTypes": ["Sideways"]})
    rv = net.list_namespaced_network_policy("default").metadata.resource_version
    recorder = apiclient.WatchRecorder(
        emulator, net.list_namespaced_network_policy, namespace="default", resource_version=rv
    )
    stored = emulator.insert(bad)
    assert int(stored["metadata"]["resourceVersion"]) > int(rv)
    ((kind, name, raw),) = recorder.take(1)
    assert (kind, name) == ("ADDED", "legacy")
    assert raw["spec"]["policyTypes"] == ["Sideways"]
    listed = net.list_namespaced_network_policy("default")
    assert listed.items[0].spec.policy_types == ["Sideways"]


def test_validate_false_accepts_invalid_objects(
    make_emulator: Callable[..., server.EmulatorThread], tmp_path: pathlib.Path
) -> None:
    emu = make_emulator(validate=False)
    client = apiclient.client_for(emu, tmp_path)
    net = kubernetes.client.NetworkingV1Api(client)
    spec = {"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]}
    created = net.create_namespaced_network_policy("default", apiclient.netpol("bad", spec))
    assert created.spec.ingress[0].ports[0].port == 0
    client.close()
