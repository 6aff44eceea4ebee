"""Unit tests for the podseg bugs the real cluster revealed. Pure: no cluster, no root.

Each test names the upstream e2e spec or the cluster test that showed the bug; the cluster
tier (the other modules here) and `scripts/cluster.sh conformance` show the fix end to end.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from agent import model
from agent.calc import compile as calc_compile
from agent.calc import containment, intervals, ruleset
from agent.calc import desired as calc_desired
from agent.calc import services as calc_services
from agent.k8s import convert
from tests.cluster import support

TCP = 6
CLIENT_IP, SERVER_IP, OTHER_IP = "198.19.128.2", "198.19.128.47", "198.19.128.48"
CLUSTER_IP = "198.19.43.123"


def _pod(name: str, ip: str, labels: dict[str, str]) -> model.Pod:
    return convert.pod(
        {
            "metadata": {"namespace": "x", "name": name, "labels": labels},
            "spec": {"nodeName": "node-1", "containers": [{"ports": []}]},
            "status": {"phase": "Running", "podIPs": [{"ip": ip}]},
        }
    )


CLIENT = _pod("a", CLIENT_IP, {"pod": "a"})
SERVER = _pod("b", SERVER_IP, {"pod": "b"})
OTHER = _pod("c", OTHER_IP, {"pod": "c"})
PODS = [CLIENT, SERVER, OTHER]


def _egress_policy(to: list[dict[str, Any]]) -> model.NetworkPolicy:
    return convert.network_policy(
        {
            "metadata": {"namespace": "x", "name": "allow-client-a-via-cidr-egress-rule"},
            "spec": {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": to}],
            },
        }
    )


def _service_index(backend: str) -> calc_services.ServiceIndex:
    service = convert.service(
        {
            "metadata": {"namespace": "x", "name": "s-x-b"},
            "spec": {
                "clusterIP": CLUSTER_IP,
                "clusterIPs": [CLUSTER_IP],
                "selector": {"pod": "b"},
                "ports": [{"name": "serve-80-tcp", "port": 80, "targetPort": 80}],
            },
        }
    )
    piece = convert.endpoint_slice(
        {
            "metadata": {
                "namespace": "x",
                "name": "s-x-b-1",
                "labels": {"kubernetes.io/service-name": "s-x-b"},
            },
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": [backend], "conditions": {"ready": True}, "nodeName": "node-1"}
            ],
            "ports": [{"name": "serve-80-tcp", "port": 80, "protocol": "TCP"}],
        }
    )
    return calc_services.build_index([service], [piece], {p.key: p for p in PODS})


def _egress(policy: model.NetworkPolicy, backend: str = SERVER_IP) -> ruleset.DirectionRuleset:
    index = _service_index(backend)
    return calc_compile.compile_pod(CLIENT, [policy], {}, PODS, (), index).egress


def _allows(direction: ruleset.DirectionRuleset, ip: str, port: int) -> bool:
    return calc_services.allows(direction, intervals.address_range(ip), TCP, port)


def test_an_ipblock_covering_a_cluster_ip_does_not_open_it_to_an_excepted_backend() -> None:
    """e2e "should enforce except clause while egress access to server in CIDR block": the
    ClusterIP lies inside the ipBlock's CIDR, the only backend in its `except`. NetworkPolicy
    judges traffic after the proxy's translation, so the Service must stay closed; podseg
    allowed it because the ClusterIP matched the CIDR before any translation."""
    policy = _egress_policy([{"ipBlock": {"cidr": "192.0.0.0/4", "except": [f"{SERVER_IP}/32"]}}])
    egress = _egress(policy)
    assert not _allows(egress, CLUSTER_IP, 80)
    assert not _allows(egress, SERVER_IP, 80)
    assert _allows(egress, OTHER_IP, 80) and _allows(egress, "203.0.113.9", 443)


def test_an_ipblock_still_opens_a_cluster_ip_through_an_allowed_backend() -> None:
    """e2e "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed":
    the same Service opens when its backend is allowed (here by a second rule), and only on
    the Service's port: the virtual address is no peer of its own."""
    policy = _egress_policy(
        [
            {"ipBlock": {"cidr": "192.0.0.0/4", "except": [f"{SERVER_IP}/32"]}},
            {"ipBlock": {"cidr": f"{SERVER_IP}/32"}},
        ]
    )
    egress = _egress(policy)
    assert _allows(egress, CLUSTER_IP, 80)
    assert not _allows(egress, CLUSTER_IP, 81)
    assert _allows(egress, SERVER_IP, 80)


def test_port_rules_lose_the_virtual_addresses_too() -> None:
    policy = convert.network_policy(
        {
            "metadata": {"namespace": "x", "name": "p"},
            "spec": {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {"ipBlock": {"cidr": "198.19.0.0/16", "except": [f"{SERVER_IP}/32"]}}
                        ],
                        "ports": [{"port": 80}],
                    }
                ],
            },
        }
    )
    egress = _egress(policy)
    assert not _allows(egress, CLUSTER_IP, 80)
    assert _allows(egress, OTHER_IP, 80)
    # with an allowed backend the Service opens again
    assert _allows(_egress(policy, backend=OTHER_IP), CLUSTER_IP, 80)


# -- the node's own addresses ----------------------------------------------------------------

NODE_IP, BRIDGE_IP = "198.19.0.2", "198.19.128.1"


def _node() -> model.Node:
    return model.Node(name="node-1", addresses=(NODE_IP,))


def _deny_ingress() -> model.NetworkPolicy:
    return convert.network_policy(
        {
            "metadata": {"namespace": "x", "name": "deny"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        }
    )


def _cluster(host: tuple[str, ...], vip: str = CLUSTER_IP) -> calc_desired.Cluster:
    base = calc_desired.Cluster.of(
        pods=PODS,
        namespaces={"x": model.Namespace("x")},
        policies=[_deny_ingress()],
        nodes=[_node()],
        guard_ports=containment.parse_ports("tcp:10250"),
    )
    virtual = (intervals.address_range(vip),)
    nodes = calc_desired.with_host_addresses(base.nodes, "node-1", host, virtual)
    return dataclasses.replace(base, nodes=nodes)


def test_an_isolated_pod_accepts_the_kubelet_from_the_bridge_address() -> None:
    """tests/cluster/test_policies.py (a readiness probe under default deny): on a bridge
    network the kubelet probes a pod from the bridge's address, which no Node object lists, so
    the pod turned NotReady under any ingress policy. The node's own namespace (the agent's,
    with the host network) tells its other addresses; loopback, link-local and Service virtual
    addresses are not the node's."""
    host = (NODE_IP, BRIDGE_IP, "127.0.0.1", "fe80::1", CLUSTER_IP, "::1")
    rs = calc_desired.desired(SERVER, _cluster(host)).ruleset
    ingress = rs.ingress.any_port_peers
    for address in (NODE_IP, BRIDGE_IP):
        assert intervals.contains(ingress, 4, int(ipaddress.ip_address(address))), address
    for address in ("127.0.0.1", CLUSTER_IP):
        assert not intervals.contains(ingress, 4, int(ipaddress.ip_address(address))), address
    assert rs.node_guard is not None
    guarded = rs.node_guard.node_addrs
    assert intervals.contains(guarded, 4, int(ipaddress.ip_address(BRIDGE_IP)))
    assert not intervals.contains(guarded, 4, int(ipaddress.ip_address(CLUSTER_IP)))


def test_host_addresses_count_only_where_the_agent_runs_on_its_node() -> None:
    """A sandbox agent runs beside its node, not on it: its namespace holds none of the
    Node's addresses and adds nothing."""
    nodes = {"node-1": _node()}
    assert calc_desired.with_host_addresses(nodes, "node-1", ("10.0.0.5", BRIDGE_IP)) is nodes
    assert calc_desired.with_host_addresses(nodes, "node-2", (NODE_IP, BRIDGE_IP)) is nodes
    merged = calc_desired.with_host_addresses(nodes, "node-1", (BRIDGE_IP, NODE_IP))
    assert merged["node-1"].addresses == (NODE_IP, BRIDGE_IP)


# -- node guard exemptions -------------------------------------------------------------------


def _guard(namespace: model.Namespace, cluster_exempt: tuple[str, ...] | None = None) -> Any:
    pod = dataclasses.replace(SERVER, namespace=namespace.name)
    base = calc_desired.Cluster.of(
        pods=[pod],
        namespaces={namespace.name: namespace},
        nodes=[_node()],
        guard_ports=containment.parse_ports("tcp:10250"),
    )
    if cluster_exempt is not None:
        base = dataclasses.replace(base, guard_exempt=cluster_exempt)
    return calc_desired.desired(pod, base).ruleset.node_guard


def test_the_node_guard_leaves_kube_system_alone_by_default() -> None:
    """A standard cluster broke under the default node guard: metrics-server (kube-system)
    scrapes every kubelet on 10250, cloud controllers read the metadata service. kube-system
    is exempt by name unless configured otherwise; any other namespace stays guarded."""
    assert _guard(model.Namespace("kube-system")) is None
    assert _guard(model.Namespace("shop")) is not None
    assert _guard(model.Namespace("kube-system"), cluster_exempt=()) is not None
    assert _guard(model.Namespace("monitoring"), cluster_exempt=("monitoring",)) is None
    labelled = model.Namespace("monitoring", {"podseg.io/node-guard": "off"})
    assert _guard(labelled) is None


def test_allow_metadata_opens_the_metadata_service_and_keeps_the_node_ports_guarded() -> None:
    guard = _guard(model.Namespace("app", {"podseg.io/node-guard": "allow-metadata"}))
    assert guard is not None and guard.blocked == () and guard.ports and guard.node_addrs
    full = _guard(model.Namespace("app"))
    assert full is not None and full.blocked


def test_exempt_namespaces_are_configured_by_flag_or_variable() -> None:
    from agent import config

    assert config.parse(["--node-name=n"], {}).node_guard_exempt_namespaces == ("kube-system",)
    env = {"PODSEG_NODE_GUARD_EXEMPT_NAMESPACES": "monitoring, kube-system"}
    assert config.parse(["--node-name=n"], env).node_guard_exempt_namespaces == (
        "kube-system",
        "monitoring",
    )
    none = {"PODSEG_NODE_GUARD_EXEMPT_NAMESPACES": "-"}
    assert config.parse(["--node-name=n"], none).node_guard_exempt_namespaces == ()
    try:
        config.parse(["--node-name=n"], {"PODSEG_NODE_GUARD_EXEMPT_NAMESPACES": "Bad_Name"})
    except config.ConfigError as exc:
        assert "PODSEG_NODE_GUARD_EXEMPT_NAMESPACES" in str(exc)
    else:
        raise AssertionError("a bad namespace name must be refused")


def test_rbac_denials_are_refusals_not_timings() -> None:
    """tests/cluster/test_80_admin_crds.py: a pass whose `kernel_ms` was 9.403 counted as an
    RBAC denial (the digits 403 after a decimal point)."""
    timing = '{"event": "reconcile_committed", "latency_ms": 28.054, "kernel_ms": 9.403}'
    refused = [
        '{"event": "api_error_backing_off", "error": "(403) Forbidden"}',
        '{"event": "x", "status": 403}',
        "pods is forbidden: User cannot list resource",
    ]
    assert support.rbac_denials("\n".join([timing, "1403 items", *refused])) == refused
