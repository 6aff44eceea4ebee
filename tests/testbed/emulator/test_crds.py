"""CustomResourceDefinitions in the emulator: the real network-policy-api CRDs of deploy/crds/
applied over HTTP like kubectl, then their kinds served (discovery, CRUD, watch) until the CRD
is deleted, which drops the kind and its objects."""

from __future__ import annotations

from typing import Any

import kubernetes.client
import pytest

from testbed.emulator import server
from testbed.sandbox import admin
from tests.support import apiclient

CNP_V1ALPHA2 = f"/apis/{admin.GROUP}/v1alpha2/clusternetworkpolicies"


def _cnp(name: str, priority: int = 10) -> dict[str, Any]:
    return admin.policy(
        "ClusterNetworkPolicy",
        name,
        {
            "tier": "Admin",
            "priority": priority,
            "subject": {"namespaces": {}},
            "ingress": [{"name": "deny-all", "action": "Deny", "from": [{"namespaces": {}}]}],
        },
    )


def _status(api: kubernetes.client.ApiClient, method: str, path: str, body: Any = None) -> int:
    try:
        admin.request(api, method, path, body)
    except admin.ApiError as exc:
        return exc.status
    return 200


def test_real_crds_install_and_serve_discovery(api_client: kubernetes.client.ApiClient) -> None:
    groups = admin.request(api_client, "GET", "/apis")["groups"]
    assert admin.GROUP not in {g["name"] for g in groups}
    assert _status(api_client, "GET", f"/apis/{admin.GROUP}") == 404
    assert _status(api_client, "GET", CNP_V1ALPHA2) == 404

    names = admin.install_crds(api_client)
    assert sorted(names) == sorted(admin.CRD_NAMES)
    # A second apply (kubectl apply twice) is an update, not a conflict.
    assert sorted(admin.install_crds(api_client)) == sorted(admin.CRD_NAMES)

    group = admin.request(api_client, "GET", f"/apis/{admin.GROUP}")
    versions = [v["version"] for v in group["versions"]]
    assert versions == ["v1beta1", "v1alpha2", "v1alpha1"]  # kube's priority order
    assert group["preferredVersion"]["version"] == "v1beta1"
    listed = {g["name"]: g for g in admin.request(api_client, "GET", "/apis")["groups"]}
    assert [v["version"] for v in listed[admin.GROUP]["versions"]] == versions
    v1alpha1 = admin.request(api_client, "GET", f"/apis/{admin.GROUP}/v1alpha1")["resources"]
    by_name = {r["name"]: r for r in v1alpha1}
    assert set(by_name) == {
        "adminnetworkpolicies",
        "adminnetworkpolicies/status",
        "baselineadminnetworkpolicies",
        "baselineadminnetworkpolicies/status",
    }
    assert by_name["adminnetworkpolicies"]["namespaced"] is False
    assert by_name["adminnetworkpolicies"]["kind"] == "AdminNetworkPolicy"
    assert "watch" in by_name["adminnetworkpolicies"]["verbs"]
    v1alpha2 = admin.request(api_client, "GET", f"/apis/{admin.GROUP}/v1alpha2")["resources"]
    assert "clusternetworkpolicies" in {r["name"] for r in v1alpha2}

    crd = admin.request(api_client, "GET", f"{admin.CRDS}/{admin.CRD_NAMES[0]}")
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert crd["status"]["acceptedNames"]["kind"] == "ClusterNetworkPolicy"
    assert admin.LAST_APPLIED in crd["metadata"]["annotations"]
    crd_list = admin.request(api_client, "GET", admin.CRDS)
    assert sorted(i["metadata"]["name"] for i in crd_list["items"]) == sorted(admin.CRD_NAMES)


def test_cluster_network_policy_crud_and_watch(
    emulator: server.EmulatorThread, api_client: kubernetes.client.ApiClient
) -> None:
    admin.install_crds(api_client)
    custom = kubernetes.client.CustomObjectsApi(api_client)
    rec = apiclient.WatchRecorder(
        emulator,
        custom.list_cluster_custom_object,
        group=admin.GROUP,
        version="v1alpha2",
        plural="clusternetworkpolicies",
    )
    created = admin.apply(api_client, _cnp("deny-all"))
    assert created["metadata"]["generation"] == 1
    assert created["metadata"]["uid"]
    assert "namespace" not in created["metadata"]
    [(kind, name, obj)] = rec.take(1)
    assert (kind, name) == ("ADDED", "deny-all")
    assert obj["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]

    updated = admin.apply(api_client, _cnp("deny-all", priority=20))
    assert updated["spec"]["priority"] == 20
    assert updated["metadata"]["generation"] == 2
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    [(kind, _, obj)] = rec.take(1)
    assert (kind, obj["spec"]["priority"]) == ("MODIFIED", 20)

    # The same object under the other served version, as the real server converts it.
    beta = admin.request(api_client, "GET", f"/apis/{admin.GROUP}/v1beta1/clusternetworkpolicies")
    assert [i["metadata"]["name"] for i in beta["items"]] == ["deny-all"]
    one = admin.request(
        api_client, "GET", f"/apis/{admin.GROUP}/v1beta1/clusternetworkpolicies/deny-all"
    )
    assert one["apiVersion"] == f"{admin.GROUP}/v1beta1"
    listed = admin.request(api_client, "GET", CNP_V1ALPHA2)
    assert listed["kind"] == "ClusterNetworkPolicyList"
    assert listed["metadata"]["resourceVersion"]

    # No schema: only metadata is checked.
    nameless = {"apiVersion": f"{admin.GROUP}/v1alpha2", "kind": "ClusterNetworkPolicy"}
    assert _status(api_client, "POST", CNP_V1ALPHA2, {**nameless, "metadata": {}}) == 422
    odd = {**nameless, "metadata": {"name": "odd"}, "spec": {"anything": ["goes"]}}
    assert _status(api_client, "POST", CNP_V1ALPHA2, odd) == 200
    assert _status(api_client, "POST", CNP_V1ALPHA2, odd) == 409

    custom.delete_cluster_custom_object(admin.GROUP, "v1alpha2", "clusternetworkpolicies", "odd")
    admin.delete(api_client, _cnp("deny-all"))
    events = rec.take(3)
    assert [(k, n) for k, n, _ in events] == [
        ("ADDED", "odd"),
        ("DELETED", "odd"),
        ("DELETED", "deny-all"),
    ]
    assert _status(api_client, "GET", f"{CNP_V1ALPHA2}/deny-all") == 404
    rec.stop()
    rec.join()


def test_deleting_the_crd_drops_the_kind_and_its_objects(
    emulator: server.EmulatorThread, api_client: kubernetes.client.ApiClient
) -> None:
    admin.install_crds(api_client)
    admin.apply(api_client, _cnp("a"))
    admin.apply(api_client, _cnp("b", priority=11))
    custom = kubernetes.client.CustomObjectsApi(api_client)
    rec = apiclient.WatchRecorder(
        emulator,
        custom.list_cluster_custom_object,
        group=admin.GROUP,
        version="v1alpha2",
        plural="clusternetworkpolicies",
    )
    assert [(k, n) for k, n, _ in rec.take(2)] == [("ADDED", "a"), ("ADDED", "b")]
    admin.delete(
        api_client, {"kind": "CustomResourceDefinition", "metadata": {"name": admin.CRD_NAMES[0]}}
    )
    assert sorted((k, n) for k, n, _ in rec.take(2)) == [("DELETED", "a"), ("DELETED", "b")]
    with pytest.raises(AssertionError, match="stream ended"):
        rec.take(1)  # the watch on a kind that is no longer served ends
    assert _status(api_client, "GET", CNP_V1ALPHA2) == 404
    assert _status(api_client, "GET", f"/apis/{admin.GROUP}/v1alpha2") == 404
    assert _status(api_client, "GET", f"/apis/{admin.GROUP}/v1beta1") == 404
    group = admin.request(api_client, "GET", f"/apis/{admin.GROUP}")
    assert [v["version"] for v in group["versions"]] == ["v1alpha1"]
    # Installed again, the kind starts empty.
    admin.install_crds(api_client)
    assert admin.request(api_client, "GET", CNP_V1ALPHA2)["items"] == []
    admin.uninstall_crds(api_client)
    assert _status(api_client, "GET", f"/apis/{admin.GROUP}") == 404


def _namespaced_crd(versions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.podseg.io"},
        "spec": {
            "group": "example.podseg.io",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": versions,
        },
    }


def test_namespaced_custom_kind(
    core: kubernetes.client.CoreV1Api, api_client: kubernetes.client.ApiClient
) -> None:
    crds = admin.CRDS
    version = {"name": "v1", "served": True, "storage": True}
    assert _status(api_client, "POST", crds, _namespaced_crd([version])) == 200
    core.create_namespace({"metadata": {"name": "ns1"}})
    base = "/apis/example.podseg.io/v1"
    widget = {"apiVersion": "example.podseg.io/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert _status(api_client, "POST", f"{base}/widgets", widget) == 405  # needs a namespace
    assert _status(api_client, "POST", f"{base}/namespaces/ns1/widgets", widget) == 200
    assert _status(api_client, "POST", f"{base}/namespaces/nowhere/widgets", widget) == 404
    everywhere = admin.request(api_client, "GET", f"{base}/widgets")
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in everywhere["items"]] == [
        ("ns1", "w")
    ]
    patched = admin.request(
        api_client,
        "PATCH",
        f"{base}/namespaces/ns1/widgets/w",
        {"spec": {"size": 3}},
        admin.MERGE_PATCH,
    )
    assert patched["spec"] == {"size": 3}
    core.delete_namespace("ns1")
    assert admin.request(api_client, "GET", f"{base}/widgets")["items"] == []


def test_bad_crds_are_refused(api_client: kubernetes.client.ApiClient) -> None:
    crds = admin.CRDS
    no_storage = _namespaced_crd([{"name": "v1", "served": True, "storage": False}])
    assert _status(api_client, "POST", crds, no_storage) == 422
    wrong_name = _namespaced_crd([{"name": "v1", "served": True, "storage": True}])
    wrong_name["metadata"]["name"] = "gadgets.example.podseg.io"
    assert _status(api_client, "POST", crds, wrong_name) == 422
    builtin = _namespaced_crd([{"name": "v1", "served": True, "storage": True}])
    builtin["metadata"]["name"] = "networkpolicies.networking.k8s.io"
    builtin["spec"]["group"] = "networking.k8s.io"
    builtin["spec"]["names"]["plural"] = "networkpolicies"
    assert _status(api_client, "POST", crds, builtin) == 422
    assert admin.request(api_client, "GET", crds)["items"] == []
