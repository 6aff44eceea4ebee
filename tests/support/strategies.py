"""Hypothesis building blocks for the policy tests: selectors, peers, ports and specs the API
server accepts, raw API objects (pods, namespaces, Services, EndpointSlices, nodes), labels with
quarantine and node-guard variants, and `fingerprints`: every pod's desired ruleset as the
agent computes it."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Sequence
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from agent import store
from agent.calc import containment
from agent.calc import desired as calc_desired
from agent.dataplane.nft import render as render_nft
from agent.k8s import watch

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c", "d")
LABEL_KEYS = ("app", "tier", "example.com/team")
LABEL_VALUES = ("web", "db", "one", "")

labels_st = st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=3)


@st.composite
def selectors(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["matchLabels"] = draw(labels_st)
    if draw(st.booleans()):
        exprs = []
        for _ in range(draw(st.integers(0, 2))):
            op = draw(st.sampled_from(("In", "NotIn", "Exists", "DoesNotExist")))
            expr: dict[str, Any] = {"key": draw(st.sampled_from(LABEL_KEYS)), "operator": op}
            if op in ("In", "NotIn"):
                expr["values"] = draw(st.lists(st.sampled_from(LABEL_VALUES), min_size=1))
            exprs.append(expr)
        out["matchExpressions"] = exprs
    return out


@st.composite
def valid_peers(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(("pod", "ns", "both", "ip")))
    if kind == "ip":
        base = draw(st.sampled_from(("198.18.0.0/16", "198.18.0.0/15", "fd00:198:18::/48")))
        block: dict[str, Any] = {"cidr": base}
        if draw(st.booleans()):
            net = ipaddress.ip_network(base)
            block["except"] = [str(next(net.subnets(new_prefix=net.prefixlen + 8)))]
        return {"ipBlock": block}
    peer: dict[str, Any] = {}
    if kind in ("pod", "both"):
        peer["podSelector"] = draw(selectors())
    if kind in ("ns", "both"):
        peer["namespaceSelector"] = draw(selectors())
    return peer


@st.composite
def valid_ports(draw: st.DrawFn) -> dict[str, Any]:
    port: dict[str, Any] = {"protocol": draw(st.sampled_from(("TCP", "UDP", "SCTP")))}
    choice = draw(st.sampled_from(("none", "num", "range", "name")))
    if choice == "num":
        port["port"] = draw(st.integers(1, 65535))
    elif choice == "range":
        first = draw(st.integers(1, 65000))
        port["port"], port["endPort"] = first, draw(st.integers(first, 65535))
    elif choice == "name":
        port["port"] = draw(st.sampled_from(("serve-80-tcp", "serve-81-udp", "http", "dns")))
    return port


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": draw(selectors())}
    for direction, peer_key in (("ingress", "from"), ("egress", "to")):
        if draw(st.booleans()):
            spec[direction] = [
                {
                    peer_key: draw(st.lists(valid_peers(), max_size=2)),
                    "ports": draw(st.lists(valid_ports(), max_size=2)),
                }
                for _ in range(draw(st.integers(0, 2)))
            ]
    if draw(st.booleans()):
        spec["policyTypes"] = draw(
            st.sampled_from((["Ingress"], ["Egress"], ["Ingress", "Egress"]))
        )
    return spec


def policy_obj(namespace: str, name: str, spec: Any, rv: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": namespace, "name": name, "resourceVersion": str(rv)},
        "spec": spec,
    }


def pod_obj(
    namespace: str,
    name: str,
    labels: dict[str, str],
    rv: int = 1,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    index = NAMESPACES.index(namespace) * 16 + POD_NAMES.index(name) + 2
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "namespace": namespace,
            "name": name,
            "labels": labels,
            "annotations": annotations or {},
            "resourceVersion": str(rv),
        },
        "spec": {
            "nodeName": "node-1",
            "containers": [
                {
                    "name": "c",
                    "ports": [
                        {"name": "serve-80-tcp", "containerPort": 80, "protocol": "TCP"},
                        {"name": "serve-81-udp", "containerPort": 81, "protocol": "UDP"},
                    ],
                }
            ],
        },
        "status": {"podIPs": [{"ip": f"198.18.0.{index}"}, {"ip": f"fd00:198:18::{index:x}"}]},
    }


def ns_obj(name: str, labels: dict[str, str], rv: int = 1) -> dict[str, Any]:
    meta = {"name": name, "labels": labels, "resourceVersion": str(rv)}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def service_obj(namespace: str, name: str, app: str, rv: int = 1) -> dict[str, Any]:
    meta = {"namespace": namespace, "name": name, "resourceVersion": str(rv)}
    number = NAMESPACES.index(namespace) * 4 + int(name[-1]) + 10
    spec = {
        "clusterIPs": [f"198.19.192.{number}", f"fd00:198:18:ffff::{number:x}"],
        "clusterIP": f"198.19.192.{number}",
        "selector": {"app": app},
        "ports": [{"name": "a", "port": 5000, "targetPort": "serve-80-tcp"}],
    }
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def slice_obj(
    namespace: str, service: str, pods: list[str], ready: list[bool], rv: int = 1
) -> dict[str, Any]:
    meta = {
        "namespace": namespace,
        "name": f"{service}-1",
        "resourceVersion": str(rv),
        "labels": {"kubernetes.io/service-name": service},
    }
    endpoints = [
        {
            "addresses": [pod_obj(namespace, pod, {})["status"]["podIPs"][0]["ip"]],
            "conditions": {"ready": is_ready},
        }
        for pod, is_ready in zip(pods, ready, strict=False)
    ]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": meta,
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "a", "port": 80, "protocol": "TCP"}],
    }


def node_obj(name: str, addresses: Sequence[str], rv: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "resourceVersion": str(rv)},
        "status": {"addresses": [{"type": "InternalIP", "address": a} for a in addresses]},
    }


GUARD_PORTS = containment.parse_ports(containment.DEFAULT_NODE_GUARD_PORTS)
NODE_ADDRESSES = ("198.18.100.1", "198.18.100.2", "fd00:198:18::100:1")
FORENSICS = ("198.18.200.0/24", "fd00:198:18:200::/64", "not-a-cidr")


def fingerprints(
    snapshot: store.Store, policies_order: random.Random | None = None
) -> dict[str, str]:
    """Every pod's desired ruleset (`calc.desired`, as the agent computes it), fingerprinted."""
    policies = list(snapshot.policies.values())
    if policies_order is not None:
        policies_order.shuffle(policies)
    cluster = calc_desired.Cluster.of(
        pods=snapshot.pods.values(),
        namespaces=snapshot.namespaces,
        policies=policies,
        nodes=snapshot.nodes.values(),
        services=snapshot.services.values(),
        endpointslices=snapshot.endpointslices.values(),
        guard_ports=GUARD_PORTS,
    )
    out = {}
    for key in sorted(snapshot.pods):
        rs = calc_desired.desired(snapshot.pods[key], cluster).ruleset
        out[key] = render_nft.render(rs, ["eth0"]).fingerprint
    return out


@st.composite
def pod_labels(draw: st.DrawFn) -> tuple[dict[str, str], dict[str, str]]:
    """Labels (sometimes quarantined) and annotations (sometimes forensic sources)."""
    labels = draw(labels_st)
    annotations: dict[str, str] = {}
    if draw(st.integers(0, 3)) == 0:
        labels[containment.QUARANTINE_LABEL] = "true"
        sources = draw(st.lists(st.sampled_from(FORENSICS), unique=True, max_size=2))
        if sources:
            annotations[containment.ALLOW_FROM_ANNOTATION] = ",".join(sources)
    return labels, annotations


@st.composite
def namespace_labels(draw: st.DrawFn) -> dict[str, str]:
    labels = draw(labels_st)
    if draw(st.integers(0, 3)) == 0:
        labels[containment.NODE_GUARD_LABEL] = "off"
    return labels


def feed(events: Iterable[watch.WatchEvent | watch.Relist]) -> store.Store:
    snapshot = store.Store()
    for event in events:
        snapshot.apply(event, store.Change())
    return snapshot
