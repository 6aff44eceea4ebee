"""Property and fuzz tests (hypothesis) for the promises the pure core makes.

* Desired state depends only on the final snapshot: any interleaving of the same watch events
  (with replays), or a single relist, gives every pod the same desired ruleset
  (`calc.desired`: policies, Services and EndpointSlices with endpoint churn and readiness
  flips, quarantine with forensic sources, the node guard with node address changes and
  exempt namespaces).
* Random valid and invalid NetworkPolicies never crash convert, compile or render, and an
  entry that is invalid never allows anything (fail closed).
* The emulator's validator accepts exactly what the real API server accepts, judged by an
  independent restatement of the upstream rules (pkg/apis/networking/validation and
  apimachinery's IsValidPortName / IsQualifiedName / IsValidLabelValue), and the agent
  converts everything the validator accepts without reporting an error.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Iterable, Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import model, store
from agent.calc import compile as calc_compile
from agent.calc import containment
from agent.calc import desired as calc_desired
from agent.dataplane.nft import render as render_nft
from agent.k8s import convert, watch
from testbed.emulator import validation

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c", "d")
LABEL_KEYS = ("app", "tier", "example.com/team")
LABEL_VALUES = ("web", "db", "one", "")

# -- building blocks --------------------------------------------------------------------
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


# -- 1. order independence ---------------------------------------------------------------
Event = tuple[str, str, dict[str, Any] | None]  # (resource, key, object or None = deleted)


@st.composite
def histories(draw: st.DrawFn) -> dict[tuple[str, str], list[dict[str, Any] | None]]:
    """Per object, the sequence of versions it goes through (None = deleted)."""
    out: dict[tuple[str, str], list[dict[str, Any] | None]] = {}
    rv = iter(range(1, 10_000))
    for node in ("node-1", "node-2"):
        out[("nodes", node)] = [
            node_obj(node, draw(st.lists(st.sampled_from(NODE_ADDRESSES), unique=True)), next(rv))
            for _ in range(draw(st.integers(1, 3)))
        ]
    for ns in NAMESPACES:
        out[("namespaces", ns)] = [ns_obj(ns, draw(namespace_labels()), next(rv))]
        out[("namespaces", ns)] += [
            ns_obj(ns, draw(namespace_labels()), next(rv)) for _ in range(draw(st.integers(0, 2)))
        ]
        for name in draw(st.lists(st.sampled_from(POD_NAMES), unique=True, max_size=3)):
            versions: list[dict[str, Any] | None] = []
            for _ in range(draw(st.integers(1, 3))):
                labels, annotations = draw(pod_labels())
                versions.append(pod_obj(ns, name, labels, next(rv), annotations))
            if draw(st.booleans()):
                versions.append(None)
            out[("pods", f"{ns}/{name}")] = versions
        for i in range(draw(st.integers(0, 2))):
            versions = [
                policy_obj(ns, f"p{i}", draw(valid_specs()), next(rv))
                for _ in range(draw(st.integers(1, 2)))
            ]
            if draw(st.booleans()):
                versions.append(None)
            out[("networkpolicies", f"{ns}/p{i}")] = versions
        for i in range(draw(st.integers(0, 2))):
            name = f"s{i}"
            svc_versions: list[dict[str, Any] | None] = [
                service_obj(ns, name, draw(st.sampled_from(LABEL_VALUES)), next(rv))
                for _ in range(draw(st.integers(1, 2)))
            ]
            if draw(st.booleans()):
                svc_versions.append(None)
            out[("services", f"{ns}/{name}")] = svc_versions
            slice_versions: list[dict[str, Any] | None] = [
                slice_obj(
                    ns,
                    name,
                    draw(st.lists(st.sampled_from(POD_NAMES), unique=True, max_size=3)),
                    draw(st.lists(st.booleans(), min_size=3, max_size=3)),
                    next(rv),
                )
                for _ in range(draw(st.integers(1, 3)))
            ]
            if draw(st.booleans()):
                slice_versions.append(None)
            out[("endpointslices", f"{ns}/{name}-1")] = slice_versions
    return out


def interleave(
    hist: dict[tuple[str, str], list[dict[str, Any] | None]], rnd: random.Random, replay: bool
) -> list[watch.WatchEvent]:
    """A random merge of the per-object histories (each object's own order kept)."""
    queues = {key: list(versions) for key, versions in hist.items()}
    last: dict[tuple[str, str], dict[str, Any] | None] = {}
    events: list[watch.WatchEvent] = []
    while queues:
        key = rnd.choice(sorted(queues))
        version = queues[key].pop(0)
        if not queues[key]:
            del queues[key]
        previous = last.get(key)
        if version is None:
            assert previous is not None
            events.append(watch.WatchEvent(key[0], "DELETED", previous, 0.0))
        else:
            kind = "MODIFIED" if previous is not None else "ADDED"
            events.append(watch.WatchEvent(key[0], kind, version, 0.0))
        last[key] = version
        if replay and rnd.random() < 0.2:
            events.append(events[-1])  # a duplicate delivery must change nothing
    return events


def feed(events: Iterable[watch.WatchEvent | watch.Relist]) -> store.Store:
    snapshot = store.Store()
    for event in events:
        snapshot.apply(event, store.Change())
    return snapshot


@SETTINGS
@given(hist=histories(), seed_a=st.integers(0, 2**32), seed_b=st.integers(0, 2**32))
def test_compile_is_independent_of_event_order(
    hist: dict[tuple[str, str], list[dict[str, Any] | None]], seed_a: int, seed_b: int
) -> None:
    one = feed(interleave(hist, random.Random(seed_a), replay=False))
    two = feed(interleave(hist, random.Random(seed_b), replay=True))
    final = {key: versions[-1] for key, versions in hist.items()}
    relist = feed(
        watch.Relist(kind, [obj for (k, _), obj in final.items() if k == kind and obj], "", 0.0)
        for kind in ("nodes", "namespaces", "pods", "networkpolicies", "services", "endpointslices")
    )
    expected = fingerprints(relist)
    assert fingerprints(one) == expected
    assert fingerprints(two, random.Random(seed_a)) == expected  # policy order too


# -- 2. fuzz: nothing crashes, invalid never allows --------------------------------------
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(("TCP", "UDP", "SCTP", "tcp", "80", "http", "10.0.0.0/8", "::/0", "1.2.3.4")),
)
json_any = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=12,
)


def garbage_or(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, json_any)


@st.composite
def fuzzed_specs(draw: st.DrawFn) -> Any:
    """Specs whose every part is either well-formed or arbitrary JSON."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_any)
    spec: dict[str, Any] = {"podSelector": draw(garbage_or(selectors()))}
    for direction, peer_key in (("ingress", "from"), ("egress", "to")):
        spec[direction] = draw(
            garbage_or(
                st.lists(
                    garbage_or(
                        st.fixed_dictionaries(
                            {
                                peer_key: garbage_or(st.lists(garbage_or(valid_peers()))),
                                "ports": garbage_or(st.lists(garbage_or(valid_ports()))),
                            }
                        )
                    ),
                    max_size=3,
                )
            )
        )
    spec["policyTypes"] = draw(garbage_or(st.lists(st.sampled_from(("Ingress", "Egress")))))
    return spec


PEERS = [
    convert.pod(pod_obj(ns, name, {"app": "web", "tier": "db"}))
    for ns in NAMESPACES
    for name in POD_NAMES[:2]
]
PEER_NAMESPACES = {ns: model.Namespace(ns, {"example.com/team": "one"}) for ns in NAMESPACES}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=fuzzed_specs())
def test_random_policies_never_crash_convert_compile_or_render(spec: Any) -> None:
    policy = convert.network_policy(policy_obj("x", "fuzz", spec))
    assert isinstance(policy, model.NetworkPolicy)
    snapshot = feed(
        [
            watch.Relist("networkpolicies", [policy_obj("x", "fuzz", spec)], "", 0.0),
            watch.Relist("pods", [pod_obj("x", "a", {"app": "web"})], "", 0.0),
        ]
    )
    assert list(snapshot.policies.values()) == [policy]
    index = calc_compile.build_index(PEER_NAMESPACES, PEERS)
    for pod in PEERS[:2]:
        rs = calc_compile.compile_indexed(pod, [policy], index)
        rendered = render_nft.render(rs, ["eth0"])
        assert render_nft.parse_fingerprint(rendered.script) == rendered.fingerprint


invalid_peers = st.one_of(
    st.just({}),
    st.builds(lambda c: {"ipBlock": {"cidr": c}}, st.sampled_from(("bad", "10.0.0.0/33", ""))),
    st.just({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}),
    st.just({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}),
    st.just({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}),
    json_leaf,
)
invalid_ports = st.one_of(
    st.builds(lambda p: {"port": p}, st.sampled_from((0, 70000, -1, True, 1.5, "no--pe", ""))),
    st.just({"protocol": "ICMP", "port": 80}),
    st.just({"port": 90, "endPort": 80}),
    st.just({"port": "http", "endPort": 90}),
    json_leaf,
)


@SETTINGS
@given(peers=st.lists(invalid_peers, min_size=1, max_size=3), bad_port=invalid_ports)
def test_invalid_entries_allow_nothing(peers: list[Any], bad_port: Any) -> None:
    """A rule whose every peer (or every port) is invalid allows nothing at all."""
    target = PEERS[0]
    for rule in ({"from": peers}, {"ports": [bad_port]}):
        spec = {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [rule]}
        policy = convert.network_policy(policy_obj("x", "broken", spec))
        # (convert may not flag every name the API rejects, e.g. "no--pe"; such a name can
        # never match a container port the API accepted, so the safety property below holds)
        index = calc_compile.build_index(PEER_NAMESPACES, PEERS)
        rs = calc_compile.compile_indexed(target, [policy], index)
        assert rs.ingress.isolated
        assert rs.ingress.any_port_peers == () and rs.ingress.port_peers == (), spec


# -- 3. the emulator's validator against the upstream rules ------------------------------
_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

PORT_VALUES: Sequence[Any] = (
    None, 1, 80, 65535, 0, 65536, -5, "http", "serve-80-tcp", "a-b", "80", "HTTP", "-dns",
    "dns-", "a--b", "abcdefghijklmnop", "abcdefghijklmno", "", "web_1",
)  # fmt: skip
END_VALUES: Sequence[Any] = (None, 80, 81, 65535, 65536, 10, "90")
PROTOCOL_VALUES: Sequence[Any] = (None, "TCP", "UDP", "SCTP", "tcp", "ICMP")
CIDR_VALUES: Sequence[str] = (
    "10.0.0.0/8", "198.18.0.0/15", "fd00:198:18::/48", "0.0.0.0/0", "::/0", "10.0.0.0/33",
    "bad", "", "10.0.0.1", "fd00::/129",
)  # fmt: skip
EXCEPT_VALUES: Sequence[str] = (
    "10.1.0.0/16", "10.0.0.0/8", "11.0.0.0/16", "198.18.1.0/24", "fd00:198:18:1::/64",
    "10.0.0.0/4", "bad", "0.0.0.0/1",
)  # fmt: skip
KEY_VALUES: Sequence[str] = (
    "app", "example.com/team", "a.b_c-d", "-bad", "bad-", "UPPER", "x" * 63, "x" * 64,
    "Example.com/x", "/x", "a/b/c", "",
)  # fmt: skip
VALUE_VALUES: Sequence[Any] = ("", "web", "a.b-c_d", "-x", "x" * 63, "x" * 64, "sp ace")
OPERATOR_VALUES: Sequence[str] = ("In", "NotIn", "Exists", "DoesNotExist", "in", "Equals")
TYPE_VALUES: Sequence[Any] = ("Ingress", "Egress", "ingress", "Both")


def oracle_port_name(name: str) -> bool:
    """apimachinery IsValidPortName (IANA_SVC_NAME)."""
    return (
        0 < len(name) <= 15
        and _PORT_NAME.match(name) is not None
        and re.search("[a-z]", name) is not None
        and "--" not in name
    )


def oracle_port(port: dict[str, Any]) -> bool:
    protocol, value, end = port.get("protocol"), port.get("port"), port.get("endPort")
    if protocol is not None and protocol not in ("TCP", "UDP", "SCTP"):
        return False
    if end is not None and not isinstance(end, int):
        return False
    if value is None:
        return end is None
    if isinstance(value, int):
        if not 1 <= value <= 65535:
            return False
        return end is None or (value <= end <= 65535)
    return end is None and oracle_port_name(value)


def _net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False) if "/" in text else None
    except ValueError:
        return None


def oracle_ip_block(block: dict[str, Any]) -> bool:
    cidr = _net(block["cidr"])
    if cidr is None:
        return False
    for text in block.get("except", []):
        sub = _net(text)
        if sub is None or sub.version != cidr.version:
            return False
        if sub.network_address not in cidr or sub.prefixlen <= cidr.prefixlen:
            return False
    return True


def oracle_key(key: str) -> bool:
    """IsQualifiedName: optional DNS-subdomain prefix (<=253) and '/', name <= 63."""
    parts = key.split("/")
    if len(parts) > 2:
        return False
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix):
            return False
    name = parts[-1]
    return 0 < len(name) <= 63 and _LABEL_NAME.match(name) is not None


def oracle_value(value: str) -> bool:
    return value == "" or (len(value) <= 63 and _LABEL_NAME.match(value) is not None)


def oracle_selector(sel: dict[str, Any]) -> bool:
    for key, value in sel.get("matchLabels", {}).items():
        if not (oracle_key(key) and oracle_value(value)):
            return False
    for expr in sel.get("matchExpressions", []):
        op, values = expr["operator"], expr.get("values", [])
        if not oracle_key(expr["key"]) or not all(oracle_value(v) for v in values):
            return False
        if op in ("In", "NotIn"):
            if not values:
                return False
        elif op in ("Exists", "DoesNotExist"):
            if values:
                return False
        else:
            return False
    return True


def oracle_peer(peer: dict[str, Any]) -> bool:
    count = sum(k in peer for k in ("podSelector", "namespaceSelector", "ipBlock"))
    if count == 0 or (count > 1 and "ipBlock" in peer):
        return False
    selectors_ok = all(
        oracle_selector(peer[k]) for k in ("podSelector", "namespaceSelector") if k in peer
    )
    return selectors_ok and ("ipBlock" not in peer or oracle_ip_block(peer["ipBlock"]))


def oracle_spec(spec: dict[str, Any]) -> bool:
    if not oracle_selector(spec["podSelector"]):
        return False
    for direction, peer_key in (("ingress", "from"), ("egress", "to")):
        for rule in spec.get(direction, []):
            if not all(oracle_port(p) for p in rule.get("ports", [])):
                return False
            if not all(oracle_peer(p) for p in rule.get(peer_key, [])):
                return False
    types = spec.get("policyTypes", [])
    return len(types) <= 2 and all(t in ("Ingress", "Egress") for t in types)


@st.composite
def api_selectors(draw: st.DrawFn) -> dict[str, Any]:
    sel: dict[str, Any] = {}
    if draw(st.booleans()):
        sel["matchLabels"] = draw(
            st.dictionaries(st.sampled_from(KEY_VALUES), st.sampled_from(VALUE_VALUES), max_size=2)
        )
    if draw(st.booleans()):
        sel["matchExpressions"] = [
            {
                "key": draw(st.sampled_from(KEY_VALUES)),
                "operator": draw(st.sampled_from(OPERATOR_VALUES)),
                **(
                    {"values": draw(st.lists(st.sampled_from(VALUE_VALUES), max_size=2))}
                    if draw(st.booleans())
                    else {}
                ),
            }
            for _ in range(draw(st.integers(0, 2)))
        ]
    return sel


@st.composite
def api_peers(draw: st.DrawFn) -> dict[str, Any]:
    peer: dict[str, Any] = {}
    if draw(st.integers(0, 3)) == 0:
        peer["podSelector"] = draw(api_selectors())
    if draw(st.integers(0, 3)) == 0:
        peer["namespaceSelector"] = draw(api_selectors())
    if draw(st.integers(0, 2)) == 0 or not peer:
        block: dict[str, Any] = {"cidr": draw(st.sampled_from(CIDR_VALUES))}
        if draw(st.booleans()):
            block["except"] = draw(st.lists(st.sampled_from(EXCEPT_VALUES), max_size=2))
        peer["ipBlock"] = block
    if draw(st.integers(0, 15)) == 0:
        peer.clear()
    return peer


@st.composite
def api_ports(draw: st.DrawFn) -> dict[str, Any]:
    raw = {
        "protocol": draw(st.sampled_from(PROTOCOL_VALUES)),
        "port": draw(st.sampled_from(PORT_VALUES)),
        "endPort": draw(st.sampled_from(END_VALUES)),
    }
    return {k: v for k, v in raw.items() if v is not None}


@st.composite
def api_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": draw(api_selectors())}
    for direction, peer_key in (("ingress", "from"), ("egress", "to")):
        if draw(st.booleans()):
            spec[direction] = [
                {
                    peer_key: draw(st.lists(api_peers(), max_size=2)),
                    "ports": draw(st.lists(api_ports(), max_size=2)),
                }
                for _ in range(draw(st.integers(0, 2)))
            ]
    if draw(st.booleans()):
        spec["policyTypes"] = draw(st.lists(st.sampled_from(TYPE_VALUES), max_size=3))
    return spec


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=api_specs())
def test_emulator_validator_matches_the_upstream_rules(spec: dict[str, Any]) -> None:
    accepted = validation.validate_network_policy_spec(spec) == []
    assert accepted == oracle_spec(spec), validation.validate_network_policy_spec(spec)
    if accepted:
        # Whatever the API server accepts, the agent understands without complaint.
        assert convert.network_policy(policy_obj("x", "ok", spec)).errors == ()


@SETTINGS
@given(spec=valid_specs())
def test_generated_valid_policies_are_accepted(spec: dict[str, Any]) -> None:
    """The generators used above produce what the API accepts (keeps them honest)."""
    assert validation.validate_network_policy_spec(spec) == []
    assert convert.network_policy(policy_obj("x", "ok", spec)).errors == ()
