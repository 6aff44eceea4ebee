"""Service translation (agent.calc.services) and Service/EndpointSlice conversion. Pure.

Each test compiles a client pod's egress with and without Services and checks which
ClusterIP . protocol . port elements appear: a Service opens only where a ready backend of the
same family is allowed on the port the Service port resolves to on that backend.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from agent import model
from agent.calc import compile as calc_compile
from agent.calc import intervals, ruleset
from agent.calc import services as calc_services
from agent.k8s import convert
from testbed.sandbox import endpoints, serviceproxy

TCP, UDP = 6, 17
CLUSTER_IP = "198.19.192.10"
CLUSTER_IP6 = "fd00:198:18:ffff::10"


def _pod(name: str, ip: str, labels: dict[str, str], **extra: Any) -> model.Pod:
    return convert.pod(
        {
            "metadata": {"namespace": "x", "name": name, "labels": labels},
            "spec": {
                "nodeName": extra.get("node", "node-1"),
                "containers": [{"ports": extra.get("ports", [])}],
            },
            "status": {"phase": "Running", "podIPs": [{"ip": i} for i in ip.split(",")]},
        }
    )


CLIENT = _pod("client", "198.18.1.1", {"app": "client"})
DB1 = _pod("db1", "198.18.1.2,fd00:198:18:1::2", {"app": "db"})
DB2 = _pod("db2", "198.18.1.3", {"app": "db"})
WEB = _pod("web", "198.18.1.4", {"app": "web"})
PODS = [CLIENT, DB1, DB2, WEB]


def _policy(egress: list[dict[str, Any]]) -> model.NetworkPolicy:
    return convert.network_policy(
        {
            "metadata": {"namespace": "x", "name": "p"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "client"}},
                "policyTypes": ["Egress"],
                "egress": egress,
            },
        }
    )


ALLOW_DB_81 = _policy(
    [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": 81}]}]
)


def _service(name: str = "db", ports: Any = None, **spec: Any) -> model.Service:
    body = {
        "clusterIP": CLUSTER_IP,
        "clusterIPs": [CLUSTER_IP],
        "selector": {"app": "db"},
        "ports": ports if ports is not None else [{"name": "pg", "port": 5432, "targetPort": 81}],
        **spec,
    }
    return convert.service({"metadata": {"namespace": "x", "name": name}, "spec": body})


def _slice(
    endpoints_: list[tuple[str, bool]],
    ports: Any = None,
    service: str = "db",
    family: str = "IPv4",
    name: str = "db-1",
    node: str = "node-1",
) -> model.EndpointSlice:
    return convert.endpoint_slice(
        {
            "metadata": {
                "namespace": "x",
                "name": name,
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": family,
            "endpoints": [
                {"addresses": [ip], "conditions": {"ready": ready}, "nodeName": node}
                for ip, ready in endpoints_
            ],
            "ports": ports
            if ports is not None
            else [{"name": "pg", "port": 81, "protocol": "TCP"}],
        }
    )


def _egress(
    policy: model.NetworkPolicy,
    services: list[model.Service],
    slices: list[model.EndpointSlice],
    pod: model.Pod = CLIENT,
) -> ruleset.DirectionRuleset:
    index = calc_services.build_index(services, slices, {p.key: p for p in PODS})
    return calc_compile.compile_pod(pod, [policy], {}, PODS, (), index).egress


def _opens(direction: ruleset.DirectionRuleset, ip: str, proto: int, port: int) -> bool:
    return calc_services.allows(direction, intervals.address_range(ip), proto, port)


def test_cluster_ip_opens_when_a_ready_backend_is_allowed_on_the_target_port() -> None:
    egress = _egress(ALLOW_DB_81, [_service()], [_slice([("198.18.1.2", True)])])
    assert _opens(egress, CLUSTER_IP, TCP, 5432)
    assert not _opens(egress, CLUSTER_IP, TCP, 81)  # the Service port, not the target
    assert not _opens(egress, CLUSTER_IP, UDP, 5432)
    without = _egress(ALLOW_DB_81, [], [])
    assert not _opens(without, CLUSTER_IP, TCP, 5432)
    assert _opens(without, "198.18.1.2", TCP, 81)


def test_service_none_of_whose_backends_is_allowed_stays_closed() -> None:
    web = _service("web", selector={"app": "web"})
    egress = _egress(ALLOW_DB_81, [web], [_slice([("198.18.1.4", True)], service="web")])
    assert not _opens(egress, CLUSTER_IP, TCP, 5432)
    assert egress == _egress(ALLOW_DB_81, [], [])


def test_partly_allowed_service_opens_and_is_reported_incomplete() -> None:
    slices = [_slice([("198.18.1.2", True), ("198.18.1.4", True)])]
    egress = _egress(ALLOW_DB_81, [_service()], slices)
    assert _opens(egress, CLUSTER_IP, TCP, 5432)
    index = calc_services.build_index([_service()], slices)
    base = _egress(ALLOW_DB_81, [], [])
    [(frontend, complete)] = calc_services.open_frontends(base, index, "node-1")
    assert frontend.service == "x/db" and not complete


def test_not_ready_backends_do_not_count_and_readiness_changes_the_verdict() -> None:
    closed = _egress(ALLOW_DB_81, [_service()], [_slice([("198.18.1.2", False)])])
    assert not _opens(closed, CLUSTER_IP, TCP, 5432)
    opened = _egress(ALLOW_DB_81, [_service()], [_slice([("198.18.1.2", True)])])
    assert _opens(opened, CLUSTER_IP, TCP, 5432)
    gone = _egress(ALLOW_DB_81, [_service()], [_slice([])])
    assert not _opens(gone, CLUSTER_IP, TCP, 5432)


def test_absent_readiness_is_read_as_ready() -> None:
    piece = convert.endpoint_slice(
        {
            "metadata": {
                "namespace": "x",
                "name": "s",
                "labels": {"kubernetes.io/service-name": "db"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["198.18.1.2"]}],
            "ports": [{"name": "pg", "port": 81}],
        }
    )
    assert piece.endpoints[0].ready
    assert _opens(_egress(ALLOW_DB_81, [_service()], [piece]), CLUSTER_IP, TCP, 5432)


def test_named_target_port_resolves_per_backend_slice() -> None:
    # db1 resolves "pg" to 81 (allowed), db2 to 82 (not): two slices, as the controller writes.
    ports = [{"name": "pg", "port": 5432, "targetPort": "pg"}]
    svc = _service(ports=ports)
    only_82 = [_slice([("198.18.1.3", True)], ports=[{"name": "pg", "port": 82}], name="b")]
    assert not _opens(_egress(ALLOW_DB_81, [svc], only_82), CLUSTER_IP, TCP, 5432)
    both = [*only_82, _slice([("198.18.1.2", True)], name="a")]
    assert _opens(_egress(ALLOW_DB_81, [svc], both), CLUSTER_IP, TCP, 5432)
    # A named port in the policy resolves on the pods; the slice carries the number.
    named_db = _pod("db1", "198.18.1.2", {"app": "db"}, ports=[{"name": "pg", "containerPort": 81}])
    named_policy = _policy(
        [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": "pg"}]}]
    )
    index = calc_services.build_index([svc], both)
    egress = calc_compile.compile_pod(
        CLIENT, [named_policy], {}, [CLIENT, named_db], (), index
    ).egress
    assert _opens(egress, CLUSTER_IP, TCP, 5432)


def test_port_that_resolves_to_nothing_opens_nothing_and_is_reported() -> None:
    svc = _service(ports=[{"name": "pg", "port": 5432, "targetPort": 81}, {"name": "x", "port": 1}])
    slices = [_slice([("198.18.1.2", True)], ports=[{"name": "pg"}])]  # no number
    egress = _egress(ALLOW_DB_81, [svc], slices)
    assert not _opens(egress, CLUSTER_IP, TCP, 5432)
    problems = calc_services.build_index([svc], slices).problems
    assert any("resolves to no port" in p.message for p in problems)


def test_dual_stack_each_family_opens_with_its_own_backends() -> None:
    svc = _service(
        clusterIPs=[CLUSTER_IP, CLUSTER_IP6],
        ipFamilies=["IPv4", "IPv6"],
        ipFamilyPolicy="RequireDualStack",
    )
    assert svc.cluster_ips == (CLUSTER_IP, CLUSTER_IP6)
    v4_only = [_slice([("198.18.1.2", True)])]
    egress = _egress(ALLOW_DB_81, [svc], v4_only)
    assert _opens(egress, CLUSTER_IP, TCP, 5432)
    assert not _opens(egress, CLUSTER_IP6, TCP, 5432)  # no IPv6 backend yet
    both = [*v4_only, _slice([("fd00:198:18:1::2", True)], family="IPv6", name="db-6")]
    egress = _egress(ALLOW_DB_81, [svc], both)
    assert _opens(egress, CLUSTER_IP6, TCP, 5432)


def test_external_and_load_balancer_ips_open_like_the_cluster_ip() -> None:
    svc = convert.service(
        {
            "metadata": {"namespace": "x", "name": "db"},
            "spec": {
                "type": "LoadBalancer",
                "clusterIP": CLUSTER_IP,
                "selector": {"app": "db"},
                "externalIPs": ["203.0.113.7", "not-an-ip"],
                "ports": [{"name": "pg", "port": 5432, "targetPort": 81}],
            },
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb"}]}},
        }
    )
    assert svc.external_ips == ("203.0.113.7", "203.0.113.9")
    assert any("not-an-ip" in e for e in svc.errors)
    egress = _egress(ALLOW_DB_81, [svc], [_slice([("198.18.1.2", True)])])
    for ip in (CLUSTER_IP, "203.0.113.7", "203.0.113.9"):
        assert _opens(egress, ip, TCP, 5432)


def test_headless_and_external_name_services_add_nothing() -> None:
    headless = _service(clusterIP="None", clusterIPs=["None"])
    external = convert.service(
        {
            "metadata": {"namespace": "x", "name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "a.b"},
        }
    )
    assert headless.headless and headless.cluster_ips == ()
    index = calc_services.build_index([headless, external], [_slice([("198.18.1.2", True)])])
    assert index.frontends == ()


def test_internal_traffic_policy_local_counts_only_backends_on_the_clients_node() -> None:
    svc = _service(internalTrafficPolicy="Local")
    remote = [_slice([("198.18.1.2", True)], node="node-2")]
    assert not _opens(_egress(ALLOW_DB_81, [svc], remote), CLUSTER_IP, TCP, 5432)
    local = [_slice([("198.18.1.2", True)], node="node-1")]
    assert _opens(_egress(ALLOW_DB_81, [svc], local), CLUSTER_IP, TCP, 5432)


def test_unknown_pods_and_orphan_slices_are_reported_and_judged_by_address_only() -> None:
    ghost = convert.endpoint_slice(
        {
            "metadata": {
                "namespace": "x",
                "name": "m",
                "labels": {"kubernetes.io/service-name": "db"},
            },
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["198.18.1.4"], "targetRef": {"kind": "Pod", "name": "ghost"}}
            ],
            "ports": [{"name": "pg", "port": 81}],
        }
    )
    orphan = _slice([("198.18.1.2", True)], service="nosuch", name="o")
    selectorless = _service(selector=None)
    index = calc_services.build_index([selectorless], [ghost, orphan], {p.key: p for p in PODS})
    messages = " | ".join(p.message for p in index.problems)
    assert "unknown pod x/ghost" in messages
    assert "no known Service" in messages
    assert "no selector" in messages
    # web's address is not allowed: nothing opens, whatever the slice claims.
    egress = _egress(ALLOW_DB_81, [selectorless], [ghost, orphan])
    assert not _opens(egress, CLUSTER_IP, TCP, 5432)


def test_unisolated_or_any_port_egress_is_left_alone_or_already_covers() -> None:
    open_egress = _egress(_policy([]), [_service()], [_slice([("198.18.1.2", True)])])
    assert open_egress.isolated and not _opens(open_egress, CLUSTER_IP, TCP, 5432)
    ingress_only = convert.network_policy(
        {"metadata": {"namespace": "x", "name": "i"}, "spec": {"podSelector": {}}}
    )
    assert not _egress(ingress_only, [_service()], [_slice([("198.18.1.2", True)])]).isolated
    any_port = _policy([{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}])
    egress = _egress(any_port, [_service()], [_slice([("198.18.1.2", True)])])
    assert _opens(egress, CLUSTER_IP, TCP, 5432)
    assert not _opens(egress, CLUSTER_IP, TCP, 5433)


def test_allows_agrees_with_brute_force_membership() -> None:
    rnd = random.Random(7)
    for _ in range(200):
        triples = []
        for _ in range(rnd.randrange(1, 8)):
            first = rnd.randrange(0, 64)
            last = first + rnd.randrange(0, 8)
            p_first = rnd.randrange(1, 20)
            triples.append(
                (
                    ruleset.AddrRange(4, first, last),
                    rnd.choice((TCP, UDP)),
                    ruleset.PortRange(p_first, p_first + rnd.randrange(0, 5)),
                )
            )
        any_port = intervals.merge_addrs(
            [ruleset.AddrRange(4, a, a + 2) for a in rnd.sample(range(0, 70), 2)]
        )
        direction = ruleset.DirectionRuleset(
            isolated=True,
            any_port_peers=any_port,
            port_peers=intervals.canonical_peer_ports(triples, exclude=any_port),
        )
        for _ in range(40):
            addr, proto, port = rnd.randrange(0, 75), rnd.choice((TCP, UDP)), rnd.randrange(0, 26)
            truth = intervals.contains(any_port, 4, addr) or any(
                a.first <= addr <= a.last and p == proto and r.first <= port <= r.last
                for a, p, r in triples
            )
            got = calc_services.allows(direction, ruleset.AddrRange(4, addr, addr), proto, port)
            assert got == truth, (addr, proto, port)


def test_translation_is_canonical_whatever_the_input_order() -> None:
    services = [
        _service(),
        _service("db2", clusterIP="198.19.192.11", clusterIPs=["198.19.192.11"]),
    ]
    slices = [
        _slice([("198.18.1.2", True), ("198.18.1.3", True)]),
        _slice([("198.18.1.3", True)], service="db2", name="db2-1"),
    ]
    one = _egress(ALLOW_DB_81, services, slices)
    two = _egress(ALLOW_DB_81, services[::-1], slices[::-1])
    assert one == two
    assert _opens(one, "198.19.192.11", TCP, 5432)


def test_sandbox_endpoint_controller_and_proxy_rules() -> None:
    service = {
        "metadata": {"namespace": "x", "name": "db"},
        "spec": {
            "selector": {"app": "db"},
            "ipFamilies": ["IPv4"],
            "clusterIP": CLUSTER_IP,
            "clusterIPs": [CLUSTER_IP],
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP", "targetPort": "pg"}],
        },
    }

    def pod(name: str, port: int) -> dict[str, Any]:
        return {
            "metadata": {"namespace": "x", "name": name, "labels": {"app": "db"}},
            "spec": {
                "nodeName": "n",
                "containers": [{"ports": [{"name": "pg", "containerPort": port}]}],
            },
            "status": {"podIPs": [{"ip": f"198.18.1.{port - 80}"}]},
        }

    slices = endpoints.slices_for(service, [pod("a", 81), pod("b", 82)], not_ready={"b"})
    assert sorted(s["ports"][0]["port"] for s in slices) == [81, 82]
    ready = {e["addresses"][0]: e["conditions"]["ready"] for s in slices for e in s["endpoints"]}
    assert ready == {"198.18.1.1": True, "198.18.1.2": False}
    script = serviceproxy.render(
        [convert.service(service)], [convert.endpoint_slice(s) for s in slices]
    )
    assert f"{CLUSTER_IP} . tcp . 5432 : goto svc1" in script
    assert "dnat ip to 198.18.1.1:81" in script
    assert "198.18.1.2" not in script  # not ready: not a backend
    ipaddress.ip_address(CLUSTER_IP)
