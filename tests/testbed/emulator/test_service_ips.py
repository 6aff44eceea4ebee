"""Service ClusterIP allocation and validation (testbed.emulator.serviceips), via the client."""

from __future__ import annotations

import ipaddress
from typing import Any

import kubernetes.client
import pytest

from testbed.emulator import serviceips
from tests.support import apiclient


def _svc(name: str, **spec: Any) -> dict[str, Any]:
    body = {"selector": {"app": name}, "ports": [{"port": 80}], **spec}
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": body}


def _invalid(core: kubernetes.client.CoreV1Api, body: dict[str, Any]) -> str:
    with pytest.raises(kubernetes.client.ApiException) as info:
        core.create_namespaced_service("default", body)
    assert info.value.status == 422
    return str(apiclient.status_of(info.value)["message"])


def test_cluster_ips_come_from_the_service_ranges_and_are_unique(
    core: kubernetes.client.CoreV1Api,
) -> None:
    a = core.create_namespaced_service("default", _svc("a"))
    b = core.create_namespaced_service("default", _svc("b"))
    for svc in (a, b):
        assert ipaddress.ip_address(svc.spec.cluster_ip) in serviceips.SERVICE_CIDR_V4
        assert svc.spec.cluster_ips == [svc.spec.cluster_ip]
        assert svc.spec.ip_families == ["IPv4"]
        assert svc.spec.ip_family_policy == "SingleStack"
        assert svc.spec.ports[0].target_port == 80
    assert a.spec.cluster_ip != b.spec.cluster_ip
    taken = a.spec.cluster_ip
    message = _invalid(core, _svc("c", clusterIP=taken))
    assert "provided IP is already allocated" in message
    assert "not in the valid range" in _invalid(core, _svc("d", clusterIP="10.0.0.1"))
    core.delete_namespaced_service("a", "default")  # released: can be asked for again
    again = core.create_namespaced_service("default", _svc("e", clusterIP=taken))
    assert again.spec.cluster_ip == taken


def test_dual_stack_and_headless_services(core: kubernetes.client.CoreV1Api) -> None:
    dual = core.create_namespaced_service("default", _svc("dual", ipFamilyPolicy="PreferDualStack"))
    v4, v6 = dual.spec.cluster_ips
    assert ipaddress.ip_address(v4) in serviceips.SERVICE_CIDR_V4
    assert ipaddress.ip_address(v6) in serviceips.SERVICE_CIDR_V6
    assert dual.spec.ip_families == ["IPv4", "IPv6"]
    six = core.create_namespaced_service(
        "default", _svc("six", ipFamilies=["IPv6"], ipFamilyPolicy="SingleStack")
    )
    assert ipaddress.ip_address(six.spec.cluster_ip).version == 6
    headless = core.create_namespaced_service("default", _svc("hl", clusterIP="None"))
    assert headless.spec.cluster_ip == "None" and headless.spec.cluster_ips == ["None"]
    bad = _invalid(core, _svc("bad", ipFamilyPolicy="SingleStack", ipFamilies=["IPv4", "IPv6"]))
    assert "SingleStack" in bad


def test_updates_keep_the_allocation_and_it_is_immutable(
    core: kubernetes.client.CoreV1Api,
) -> None:
    created = core.create_namespaced_service("default", _svc("keep"))
    body = _svc("keep", ports=[{"port": 81}])
    body["metadata"]["resourceVersion"] = created.metadata.resource_version
    replaced = core.replace_namespaced_service("keep", "default", body)
    assert replaced.spec.cluster_ip == created.spec.cluster_ip  # omitted: kept
    with pytest.raises(kubernetes.client.ApiException) as info:
        core.patch_namespaced_service(
            "keep", "default", {"spec": {"clusterIP": "198.19.192.200", "clusterIPs": None}}
        )
    assert info.value.status == 422
    assert "may not change once set" in apiclient.status_of(info.value)["message"]
