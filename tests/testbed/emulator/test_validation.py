"""Validation: real-server rules and wording, via the API and via the validator directly."""

from __future__ import annotations

from typing import Any

import kubernetes.client
import pytest

from testbed.emulator import names, resources, server, validation
from tests.support import apiclient

PORT = {"port": 80}
POD_PEER = {"podSelector": {}}

BAD_POLICIES: list[tuple[str, dict[str, Any], str, str]] = [
    ("no-pod-selector", {}, "spec.podSelector", "FieldValueRequired"),
    (
        "in-without-values",
        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
        "spec.podSelector.matchExpressions[0].values",
        "FieldValueRequired",
    ),
    (
        "exists-with-values",
        {
            "podSelector": {
                "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
            }
        },
        "spec.podSelector.matchExpressions[0].values",
        "FieldValueForbidden",
    ),
    (
        "bad-operator",
        {
            "podSelector": {
                "matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]
            }
        },
        "spec.podSelector.matchExpressions[0].operator",
        "FieldValueInvalid",
    ),
    (
        "bad-label-key",
        {"podSelector": {"matchLabels": {"-bad": "x"}}},
        "spec.podSelector.matchLabels",
        "FieldValueInvalid",
    ),
    (
        "bad-label-value",
        {"podSelector": {"matchLabels": {"ok": "x" * 64}}},
        "spec.podSelector.matchLabels",
        "FieldValueInvalid",
    ),
    (
        "bad-policy-type",
        {"podSelector": {}, "policyTypes": ["Ingress", "Sideways"]},
        "spec.policyTypes[1]",
        "FieldValueNotSupported",
    ),
    (
        "bad-protocol",
        {"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP", "port": 1}]}]},
        "spec.ingress[0].ports[0].protocol",
        "FieldValueNotSupported",
    ),
    (
        "port-zero",
        {"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]},
        "spec.ingress[0].ports[0].port",
        "FieldValueInvalid",
    ),
    (
        "port-too-big",
        {"podSelector": {}, "egress": [{"ports": [{"port": 65536}]}]},
        "spec.egress[0].ports[0].port",
        "FieldValueInvalid",
    ),
    (
        "port-name-upper",
        {"podSelector": {}, "ingress": [{"ports": [{"port": "HTTP"}]}]},
        "spec.ingress[0].ports[0].port",
        "FieldValueInvalid",
    ),
    (
        "port-name-too-long",
        {"podSelector": {}, "ingress": [{"ports": [{"port": "a" * 16}]}]},
        "spec.ingress[0].ports[0].port",
        "FieldValueInvalid",
    ),
    (
        "port-name-digits-only",
        {"podSelector": {}, "ingress": [{"ports": [{"port": "8080"}]}]},
        "spec.ingress[0].ports[0].port",
        "FieldValueInvalid",
    ),
    (
        "port-name-double-hyphen",
        {"podSelector": {}, "ingress": [{"ports": [{"port": "a--b"}]}]},
        "spec.ingress[0].ports[0].port",
        "FieldValueInvalid",
    ),
    (
        "port-name-edge-hyphen",
        {"podSelector": {}, "ingress": [{"ports": [{"port": "web-"}]}]},
        "spec.ingress[0].ports[0].port",
        "FieldValueInvalid",
    ),
    (
        "endport-with-named-port",
        {"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 90}]}]},
        "spec.ingress[0].ports[0].endPort",
        "FieldValueInvalid",
    ),
    (
        "endport-without-port",
        {"podSelector": {}, "ingress": [{"ports": [{"endPort": 90}]}]},
        "spec.ingress[0].ports[0].endPort",
        "FieldValueInvalid",
    ),
    (
        "endport-below-port",
        {"podSelector": {}, "ingress": [{"ports": [{"port": 100, "endPort": 90}]}]},
        "spec.ingress[0].ports[0].endPort",
        "FieldValueInvalid",
    ),
    (
        "bad-cidr",
        {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.300/8"}}]}]},
        "spec.ingress[0].from[0].ipBlock.cidr",
        "FieldValueInvalid",
    ),
    (
        "cidr-without-prefix",
        {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.1"}}]}]},
        "spec.ingress[0].from[0].ipBlock.cidr",
        "FieldValueInvalid",
    ),
    (
        "empty-cidr",
        {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": ""}}]}]},
        "spec.ingress[0].from[0].ipBlock.cidr",
        "FieldValueRequired",
    ),
    (
        "except-outside",
        {
            "podSelector": {},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}],
        },
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "FieldValueInvalid",
    ),
    (
        "except-equal",
        {
            "podSelector": {},
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]}],
        },
        "spec.egress[0].to[0].ipBlock.except[0]",
        "FieldValueInvalid",
    ),
    (
        "except-invalid",
        {
            "podSelector": {},
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["nope"]}}]}],
        },
        "spec.egress[0].to[0].ipBlock.except[0]",
        "FieldValueInvalid",
    ),
    (
        "peer-empty",
        {"podSelector": {}, "ingress": [{"from": [{}]}]},
        "spec.ingress[0].from[0]",
        "FieldValueRequired",
    ),
    (
        "peer-ipblock-and-selector",
        {
            "podSelector": {},
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}],
        },
        "spec.egress[0].to[0]",
        "FieldValueForbidden",
    ),
]

GOOD_POLICIES: list[dict[str, Any]] = [
    {"podSelector": {}},
    {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    {
        "podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["x"]}]},
        "ingress": [
            {
                "from": [
                    {"podSelector": {"matchLabels": {"role": "fe"}}, "namespaceSelector": {}},
                    {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                    {"ipBlock": {"cidr": "2001:db8::/32", "except": ["2001:db8:1::/48"]}},
                ],
                "ports": [
                    {"port": 80},
                    {"port": "http-alt", "protocol": "UDP"},
                    {"port": 8000, "endPort": 8080, "protocol": "SCTP"},
                    {"protocol": "TCP"},
                ],
            }
        ],
        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"a.b/c": ""}}}]}],
    },
]


@pytest.mark.parametrize(
    ("name", "spec", "field", "reason"), BAD_POLICIES, ids=[c[0] for c in BAD_POLICIES]
)
def test_bad_network_policy_is_rejected(
    net: kubernetes.client.NetworkingV1Api,
    name: str,
    spec: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    with pytest.raises(kubernetes.client.ApiException) as info:
        net.create_namespaced_network_policy("default", apiclient.netpol(name, spec))
    assert info.value.status == 422
    body = apiclient.status_of(info.value)
    assert body["reason"] == "Invalid" and body["code"] == 422
    causes = [(c["field"], c["reason"]) for c in body["details"]["causes"]]
    assert (field, reason) in causes
    assert net.list_namespaced_network_policy("default").items == []


@pytest.mark.parametrize("spec", GOOD_POLICIES)
def test_good_network_policy_is_accepted(
    net: kubernetes.client.NetworkingV1Api, spec: dict[str, Any]
) -> None:
    created = net.create_namespaced_network_policy("default", apiclient.netpol("ok", spec))
    assert created.metadata.name == "ok"


def test_invalid_status_shape(net: kubernetes.client.NetworkingV1Api) -> None:
    spec = {"podSelector": {}, "ingress": [{"ports": [{"port": 70000, "protocol": "HTTP"}]}]}
    with pytest.raises(kubernetes.client.ApiException) as info:
        net.create_namespaced_network_policy("default", apiclient.netpol("np", spec))
    assert apiclient.status_of(info.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'NetworkPolicy.networking.k8s.io "np" is invalid: ['
        'spec.ingress[0].ports[0].protocol: Unsupported value: "HTTP": supported values: '
        '"TCP", "UDP", "SCTP", '
        "spec.ingress[0].ports[0].port: Invalid value: 70000: must be between 1 and 65535, "
        "inclusive]",
        "reason": "Invalid",
        "details": {
            "name": "np",
            "group": "networking.k8s.io",
            "kind": "NetworkPolicy",
            "causes": [
                {
                    "reason": "FieldValueNotSupported",
                    "message": 'Unsupported value: "HTTP": supported values: "TCP", "UDP", "SCTP"',
                    "field": "spec.ingress[0].ports[0].protocol",
                },
                {
                    "reason": "FieldValueInvalid",
                    "message": "Invalid value: 70000: must be between 1 and 65535, inclusive",
                    "field": "spec.ingress[0].ports[0].port",
                },
            ],
        },
        "code": 422,
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"metadata": {"name": "Bad_Name"}, "spec": {"containers": []}}, "metadata.name"),
        ({"metadata": {}, "spec": {}}, "metadata.name"),
        ({"metadata": {"name": "p"}, "spec": {"containers": []}}, "spec.containers"),
        (
            {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}},
            "spec.containers[0].image",
        ),
        (
            {"metadata": {"name": "p"}, "spec": {"containers": [{"image": "i"}]}},
            "spec.containers[0].name",
        ),
        (
            {
                "metadata": {"name": "p"},
                "spec": {
                    "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 0}]}]
                },
            },
            "spec.containers[0].ports[0].containerPort",
        ),
        (
            {
                "metadata": {"name": "p"},
                "spec": {
                    "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 70000}]}]
                },
            },
            "spec.containers[0].ports[0].containerPort",
        ),
        (
            {
                "metadata": {"name": "p"},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "i",
                            "ports": [{"containerPort": 80, "name": "HTTP"}],
                        }
                    ]
                },
            },
            "spec.containers[0].ports[0].name",
        ),
        (
            {
                "metadata": {"name": "p"},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "i",
                            "ports": [{"containerPort": 80, "protocol": "X"}],
                        }
                    ]
                },
            },
            "spec.containers[0].ports[0].protocol",
        ),
        (
            {"metadata": {"name": "p", "labels": {"a/b/c": "x"}}, "spec": {}},
            "metadata.labels",
        ),
    ],
)
def test_bad_pods_are_rejected(
    emulator: server.EmulatorThread, body: dict[str, Any], field: str
) -> None:
    # Raw HTTP: the official client refuses some of these bodies before sending them.
    code, status = apiclient.raw_request(emulator, "POST", "/api/v1/namespaces/default/pods", body)
    assert code == 422
    assert status["reason"] == "Invalid"
    fields = [c["field"] for c in status["details"]["causes"]]
    assert field in fields
    code, listed = apiclient.raw_request(emulator, "GET", "/api/v1/namespaces/default/pods")
    assert code == 200 and listed["items"] == []


def test_kind_mismatch_is_bad_request(core: kubernetes.client.CoreV1Api) -> None:
    body = apiclient.pod("p")
    body["kind"] = "Service"
    with pytest.raises(kubernetes.client.ApiException) as info:
        core.create_namespaced_pod("default", body)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("app", True),
        ("example.com/app", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("Example.com/app", False),
        ("/app", False),
        ("a/b/c", False),
        ("app-", False),
        ("a_b.c", True),
    ],
)
def test_label_key_rules(key: str, ok: bool) -> None:
    assert (names.is_qualified_name(key) == []) is ok


@pytest.mark.parametrize(
    ("port", "ok"),
    [
        ("http", True),
        ("h2c", True),
        ("a" * 15, True),
        ("a" * 16, False),
        ("80", False),
        ("-a", False),
        ("a-", False),
        ("a--b", False),
        ("HTTP", False),
        ("web_1", False),
    ],
)
def test_port_name_rules(port: str, ok: bool) -> None:
    assert (names.is_valid_port_name(port) == []) is ok


def test_validator_is_usable_directly() -> None:
    obj = apiclient.netpol(
        "np", {"podSelector": {}, "policyTypes": ["Egress", "Egress", "Ingress"]}
    )
    obj["metadata"]["namespace"] = "default"
    errs = validation.validate(resources.NETWORK_POLICIES, obj)
    assert [e.message() for e in errs] == [
        'spec.policyTypes: Invalid value: ["Egress","Egress","Ingress"]: may not specify more '
        "than two policyTypes"
    ]
    ok = apiclient.netpol("np", {"podSelector": {}})
    ok["metadata"]["namespace"] = "default"
    assert validation.validate(resources.NETWORK_POLICIES, ok) == []


def test_events_need_matching_involved_namespace(core: kubernetes.client.CoreV1Api) -> None:
    body = {
        "metadata": {"name": "e1"},
        "involvedObject": {"kind": "Pod", "namespace": "kube-system", "name": "x"},
        "reason": "R",
    }
    with pytest.raises(kubernetes.client.ApiException) as info:
        core.create_namespaced_event("default", body)
    assert info.value.status == 422
    fields = [c["field"] for c in apiclient.status_of(info.value)["details"]["causes"]]
    assert fields == ["involvedObject.namespace"]
