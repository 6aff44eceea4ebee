"""Egress policies through Services, probed live through real ClusterIPs.

One sandbox node with the emulator, a real `podseg agent` and the service-proxy stand-in
(`testbed.sandbox.serviceproxy`: nftables DNAT in the node namespace, like kube-proxy). The pod
`svc/client` is the policed client; `svc/guest` is never egress-isolated and proves, in every
case, that the Service itself works (so a timeout from `client` is podseg's drop, not a broken
proxy). Without the Service translation (`agent.calc.services`) every "ok" from `client`
below would be a timeout: its egress rules see the ClusterIP, never the backend.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from testbed.emulator import serviceips
from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import probe

NS = "svc"
PROBE_TIMEOUT = 0.8
DB_PORTS = [{"name": "pg", "containerPort": 81, "protocol": "TCP"}]
DNS_PORTS = [
    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
]


class Env:
    def __init__(self, cluster: sandbox_cluster.SandboxCluster) -> None:
        self.cluster = cluster

    def pod(self, name: str, namespace: str = NS) -> Any:
        return self.cluster.pods[f"{namespace}/{name}"]

    def verdict(self, src: str, ip: str, port: int, proto: str = "tcp") -> str:
        return probe.probe(self.pod(src), ip, port, proto, timeout=PROBE_TIMEOUT)

    def expect(
        self, src: str, ip: str, port: int, want: str, proto: str = "tcp", timeout: float = 20.0
    ) -> None:
        """Probe until the verdict is `want` (and stays so for one more probe) or fail."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            last = self.verdict(src, ip, port, proto)
            if last == want and self.verdict(src, ip, port, proto) == want:
                return
        pytest.fail(f"{src} -> {ip}:{port}/{proto}: wanted {want}, still {last} after {timeout}s")

    def policy(self, name: str, spec: Mapping[str, Any], namespace: str = NS) -> None:
        self.cluster.apply_policy(
            {"metadata": {"namespace": namespace, "name": name}, "spec": spec}
        )

    def service(
        self,
        name: str,
        selector: Mapping[str, str] | None,
        ports: list[dict[str, Any]],
        namespace: str = NS,
        **spec: Any,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"ports": ports, **spec}
        if selector is not None:
            body["selector"] = dict(selector)
        return self.cluster.apply_service(
            {"metadata": {"namespace": namespace, "name": name}, "spec": body}
        )

    def deny_client_egress(self) -> None:
        self.policy(
            "client-egress",
            {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"]},
        )


@pytest.fixture(scope="module")
def env_cluster() -> Iterator[Env]:
    with sandbox_cluster.SandboxCluster(nodes=("node-1",)) as cluster:
        cluster.ensure_namespace(NS, {"team": "svc"})
        cluster.add_pod(NS, "client", {"app": "client"})
        cluster.add_pod(NS, "guest", {"app": "guest"})
        cluster.add_pod(NS, "db1", {"app": "db", "tier": "backend"}, ports=DB_PORTS)
        cluster.add_pod(NS, "db2", {"app": "db"}, ports=DB_PORTS)
        cluster.add_pod(NS, "web", {"app": "web", "tier": "backend"})
        cluster.add_pod(
            "kube-system", "coredns", {"k8s-app": "kube-dns"}, ports=DNS_PORTS, serve=(53,)
        )
        cluster.start_service_proxy()
        cluster.start_agent("node-1")
        yield Env(cluster)


@pytest.fixture
def env(env_cluster: Env) -> Iterator[Env]:
    yield env_cluster
    cluster = env_cluster.cluster
    cluster.delete_all_policies()
    for item in cluster.core.list_service_for_all_namespaces().items:
        cluster.delete_service(item.metadata.namespace, item.metadata.name)
    for item in cluster.discovery.list_endpoint_slice_for_all_namespaces().items:
        cluster.discovery.delete_namespaced_endpoint_slice(
            item.metadata.name, item.metadata.namespace
        )


def _allow_db(env: Env, port: int | str = 81) -> None:
    env.policy(
        "client-to-db",
        {
            "podSelector": {"matchLabels": {"app": "client"}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": port}]}
            ],
        },
    )


def test_egress_allowed_to_backends_works_through_the_cluster_ip(env: Env) -> None:
    svc = env.service("db", {"app": "db"}, [{"name": "pg", "port": 5432, "targetPort": 81}])
    cluster_ip = svc["spec"]["clusterIP"]
    assert ipaddress.ip_address(cluster_ip) in serviceips.SERVICE_CIDR_V4
    env.expect("client", cluster_ip, 5432, probe.OK)  # not isolated yet
    env.deny_client_egress()
    env.expect("client", cluster_ip, 5432, probe.TIMEOUT)
    env.expect("guest", cluster_ip, 5432, probe.OK)
    _allow_db(env)
    env.expect("client", cluster_ip, 5432, probe.OK)
    env.expect("client", env.pod("db1").ipv4, 81, probe.OK)  # direct traffic, as before
    env.expect("client", env.pod("web").ipv4, 81, probe.TIMEOUT)
    # Only the Service port whose backends' resolved port is allowed opens.
    other = env.service("db-other", {"app": "db"}, [{"port": 8080, "targetPort": 80}])
    env.expect("guest", other["spec"]["clusterIP"], 8080, probe.OK)
    env.expect("client", other["spec"]["clusterIP"], 8080, probe.TIMEOUT)


def test_default_deny_egress_plus_allow_dns_to_kube_dns_service(env: Env) -> None:
    dns = env.service(
        "kube-dns",
        {"k8s-app": "kube-dns"},
        [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": "dns-tcp"},
        ],
        namespace="kube-system",
    )
    db = env.service("db", {"app": "db"}, [{"name": "pg", "port": 5432, "targetPort": 81}])
    dns_ip, db_ip = dns["spec"]["clusterIP"], db["spec"]["clusterIP"]
    env.policy("default-deny", {"podSelector": {}, "policyTypes": ["Egress"]})
    env.policy(
        "allow-dns",
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                            },
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                        }
                    ],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                }
            ],
        },
    )
    env.expect("client", dns_ip, 53, probe.OK, proto="udp")
    env.expect("client", dns_ip, 53, probe.OK, proto="tcp")
    env.expect("client", db_ip, 5432, probe.TIMEOUT)
    env.expect("client", env.pod("db1").ipv4, 81, probe.TIMEOUT)


def test_named_target_port_resolves_per_backend(env: Env) -> None:
    # Service port 7000 -> targetPort "pg" = 81 on the db pods.
    svc = env.service("db", {"app": "db"}, [{"name": "pg", "port": 7000, "targetPort": "pg"}])
    cluster_ip = svc["spec"]["clusterIP"]
    slices = env.cluster.discovery.list_namespaced_endpoint_slice(NS).items
    assert {p.port for s in slices for p in s.ports} == {81}
    _allow_db(env, port="pg")  # named port in the policy too
    env.expect("client", cluster_ip, 7000, probe.OK)
    # A rule on port 80 of the same pods does not open the Service (its backends use 81).
    _allow_db(env, port=80)
    env.expect("client", cluster_ip, 7000, probe.TIMEOUT)
    env.expect("guest", cluster_ip, 7000, probe.OK)


def test_backend_becoming_ready_or_going_away_changes_the_verdict(env: Env) -> None:
    # "backend" Service: db1 (allowed by the client's policy) and web (not allowed).
    svc = env.service("backend", {"tier": "backend"}, [{"port": 9000, "targetPort": 81}])
    cluster_ip = svc["spec"]["clusterIP"]
    _allow_db(env)
    env.cluster.sync_endpoints(NS, "backend", not_ready=["db1"])
    env.expect("guest", cluster_ip, 9000, probe.OK)  # web serves it
    env.expect("client", cluster_ip, 9000, probe.TIMEOUT)  # web is not allowed
    env.cluster.sync_endpoints(NS, "backend")  # db1 becomes ready
    env.expect("client", cluster_ip, 9000, probe.OK)
    env.cluster.label_pod(f"{NS}/db1", {"tier": None})  # db1 leaves the Service
    env.cluster.sync_endpoints(NS, "backend")
    env.expect("client", cluster_ip, 9000, probe.TIMEOUT)
    env.expect("guest", cluster_ip, 9000, probe.OK)
    env.cluster.label_pod(f"{NS}/db1", {"tier": "backend"})
    env.cluster.sync_endpoints(NS, "backend")
    env.expect("client", cluster_ip, 9000, probe.OK)
    agent = env.cluster.agents["node-1"]
    _, text = agent.http("/metrics")
    assert 'podseg_policy_programming_seconds_count{kind="endpointslices"}' in text


def test_service_whose_backends_are_not_allowed_stays_blocked(env: Env) -> None:
    svc = env.service("web", {"app": "web"}, [{"port": 80}])
    cluster_ip = svc["spec"]["clusterIP"]
    _allow_db(env, port=80)
    env.expect("client", env.pod("web").ipv4, 80, probe.TIMEOUT)  # the policy is in place
    env.expect("client", env.pod("db1").ipv4, 80, probe.OK)
    env.expect("guest", cluster_ip, 80, probe.OK)
    for _ in range(5):
        assert env.verdict("client", cluster_ip, 80) == probe.TIMEOUT


def test_ingress_rules_still_see_the_client_pod_ip(env: Env) -> None:
    svc = env.service("db", {"app": "db"}, [{"port": 5432, "targetPort": 81}])
    cluster_ip = svc["spec"]["clusterIP"]
    env.policy(
        "db-ingress",
        {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}],
        },
    )
    # The proxy does not SNAT: the backends see client and guest by their own addresses (a
    # node address would be admitted for both), so only the client gets through.
    env.expect("client", cluster_ip, 5432, probe.OK)
    env.expect("guest", cluster_ip, 5432, probe.TIMEOUT)
    env.expect("guest", env.pod("web").ipv4, 81, probe.OK)


def test_dual_stack_service_ipv6_cluster_ip(env: Env) -> None:
    svc = env.service(
        "db6",
        {"app": "db"},
        [{"port": 5432, "targetPort": 81}],
        ipFamilyPolicy="RequireDualStack",
        ipFamilies=["IPv4", "IPv6"],
    )
    v4, v6 = svc["spec"]["clusterIPs"]
    assert ":" in v6 and ":" not in v4
    env.deny_client_egress()
    env.expect("client", v6, 5432, probe.TIMEOUT)
    env.expect("guest", v6, 5432, probe.OK)
    _allow_db(env)
    env.expect("client", v6, 5432, probe.OK)
    env.expect("client", v4, 5432, probe.OK)


def test_external_ip_is_allowed_like_the_cluster_ip(env: Env) -> None:
    svc = env.service(
        "db-ext", {"app": "db"}, [{"port": 6000, "targetPort": 81}], externalIPs=["198.19.240.7"]
    )
    assert svc["spec"]["externalIPs"] == ["198.19.240.7"]
    env.deny_client_egress()
    env.expect("guest", "198.19.240.7", 6000, probe.OK)
    env.expect("client", "198.19.240.7", 6000, probe.TIMEOUT)
    _allow_db(env)
    env.expect("client", "198.19.240.7", 6000, probe.OK)


def test_bad_service_input_is_logged_once_and_opens_nothing(env: Env) -> None:
    agent = env.cluster.agents["node-1"]
    _allow_db(env)
    # A Service without selector, whose hand-made slice names an unknown pod at web's address
    # (not allowed) and a port that resolves to nothing.
    svc = env.service(
        "manual",
        None,
        [{"name": "a", "port": 7100, "targetPort": 81}, {"name": "c", "port": 7200}],
    )
    cluster_ip = svc["spec"]["clusterIP"]
    env.cluster.apply_endpointslice(
        {
            "metadata": {
                "namespace": NS,
                "name": "manual-1",
                "labels": {"kubernetes.io/service-name": "manual"},
            },
            "addressType": "IPv4",
            "endpoints": [
                {
                    "addresses": [env.pod("web").ipv4],
                    "targetRef": {"kind": "Pod", "namespace": NS, "name": "ghost"},
                }
            ],
            "ports": [{"name": "a", "port": 81, "protocol": "TCP"}],
        }
    )
    env.cluster.apply_endpointslice(
        {
            "metadata": {"namespace": NS, "name": "orphan", "labels": {}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [env.pod("db1").ipv4]}],
            "ports": [{"name": "a", "port": 81}],
        }
    )
    env.expect("guest", cluster_ip, 7100, probe.OK)
    env.expect("client", cluster_ip, 7100, probe.TIMEOUT)

    def problems() -> list[str]:
        return [str(e.get("problem")) for e in agent.events("service_input_ignored")]

    sandbox_cluster.wait_until(
        lambda: (
            any("unknown pod" in p for p in problems())
            and any("no selector" in p for p in problems())
            and any("no known Service" in p for p in problems())
            and any("resolves to no port" in p for p in problems())
        ),
        10,
        "service_input_ignored log lines",
    )
    # Once per object version: churn elsewhere does not repeat them.
    before = len(problems())
    db = env.service("db", {"app": "db"}, [{"port": 5432, "targetPort": 81}])
    env.expect("client", db["spec"]["clusterIP"], 5432, probe.OK)
    assert len(problems()) == before
    assert agent.running


def test_service_without_ready_backends_is_refused_by_the_proxy_not_dropped(env: Env) -> None:
    svc = env.service("web", {"app": "web"}, [{"port": 8000, "targetPort": 80}])
    cluster_ip = svc["spec"]["clusterIP"]
    env.expect("guest", cluster_ip, 8000, probe.OK)
    # No ready backend: the proxy answers with an ICMP error at once, so a podseg drop (a
    # silent timeout) in the other tests cannot be confused with a Service that is down.
    env.cluster.sync_endpoints(NS, "web", not_ready=["web"])
    env.expect("guest", cluster_ip, 8000, probe.REFUSED)
