"""Node guard, live: pods cannot reach any node's kubelet, NodePorts, SSH, SMB or the cloud
metadata address, whatever the policies allow, while other traffic flows; an exempt namespace
can; the node's own probes still reach ingress-isolated pods. The node's listeners answer on
every address (0.0.0.0 and ::), so each address the node answers on is probed: its status
addresses (IPv4 and IPv6), a pod's gateway that no Node object lists, a configured extra
address, and the IPv6 metadata address (held by nothing here: its drop shows in the flow log)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import podclient, probe
from tests.support import live
from tests.support.polling import wait_for

METADATA = "169.254.169.254"
GUARDED = (22, 445, 10250, 30080)  # SSH, SMB, kubelet, a NodePort
OPEN = 8080  # some other service on the node: not guarded
NODE_PORTS = (*GUARDED, OPEN)
# A second address on node-1's bridge, the default gateway of pod g/c only (as on CNIs whose
# pods route through an address of the node that its status does not list), and an address
# on node-1's loopback the agent is told about (--node-guard-extra-addresses).
GATEWAY = "198.19.250.1"
EXTRA, EXTRA6 = "198.19.251.1", "fd00:198:18:fe::1"
METADATA6 = "fd00:ec2::254"
METADATA6_FOLDED = "fd00:ec2::/64"  # the flow log folds addresses of no pod to their /64


class Env:
    def __init__(self, cluster: sandbox_cluster.SandboxCluster) -> None:
        self.cluster = cluster
        self.node_servers: dict[str, podclient.PodProcess] = {}

    def verdict(self, src: str, ip: str, port: int, proto: str = "tcp") -> str:
        return probe.probe(self.cluster.pods[src], ip, port, proto, timeout=0.5)

    def node_ip(self, node: str, family: int = 4) -> str:
        return self.cluster.nodes[node].ipv4 if family == 4 else self.cluster.nodes[node].ipv6

    def flows(self, reason: str, dst: str) -> list[dict[str, Any]]:
        path = self.cluster.workdir / "flows.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        entries = [json.loads(line) for line in lines]
        return [e for e in entries if e.get("reason") == reason and e["dst"].get("ip") == dst]

    def from_node(self, node: str, dst: str, port: int = 80) -> str:
        """Probe a pod from inside the node namespace (as the kubelet's probes do)."""
        answer = self.node_servers[node].request(
            {"probes": [{"dst": self.cluster.pods[dst].ipv4, "port": port, "timeout": 0.5}]},
            10.0,
        )
        results: list[dict[str, Any]] = answer["results"]
        return str(results[0]["verdict"])


@pytest.fixture(scope="module", params=live.BACKENDS)
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    """The node-guard cluster, once per dataplane backend."""
    with sandbox_cluster.SandboxCluster(nodes=("node-1", "node-2")) as cluster:
        e = Env(cluster)
        for name, node in cluster.nodes.items():
            e.node_servers[name] = cluster.sandbox.serve_on_node(
                node, NODE_PORTS, addresses=(METADATA,) if name == "node-1" else ()
            )
        cluster.ensure_namespace("g", {"ns": "g"})
        cluster.ensure_namespace("infra", {"ns": "infra", "podseg.io/node-guard": "off"})
        cluster.add_pod("g", "a", {"pod": "a"})
        cluster.add_pod("g", "b", {"pod": "b"})
        cluster.add_pod("g", "c", {"pod": "c"})
        cluster.add_pod("infra", "agent", {"pod": "agent"})
        _route_through(cluster, "g/c", GATEWAY)
        node1 = cluster.nodes["node-1"].netns
        for address in (f"{EXTRA}/32", f"{EXTRA6}/128"):
            subprocess.run(["ip", "-n", node1, "addr", "add", address, "dev", "lo"], check=True)
        # Allow-everything egress for g: the node guard must hold anyway.
        cluster.apply_policy(
            {
                "metadata": {"namespace": "g", "name": "allow-all-egress"},
                "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
            }
        )
        extra = ["--node-guard-extra-addresses", f"{EXTRA},{EXTRA6}", "--flow-window", "0.5"]
        extra += ["--flow-log-file", str(cluster.workdir / "flows.jsonl")]
        cluster.start_agent("node-1", [*extra, *live.backend_args(request)])
        yield e


def _route_through(cluster: sandbox_cluster.SandboxCluster, pod: str, gateway: str) -> None:
    """Make `gateway`, a new address of the node's bridge, the pod's default gateway."""
    node, ns = cluster.nodes["node-1"].netns, cluster.pods[pod].netns
    subprocess.run(["ip", "-n", node, "addr", "add", f"{gateway}/32", "dev", "psg0"], check=True)
    for args in (
        ["route", "add", f"{gateway}/32", "dev", "eth0", "scope", "link"],
        ["route", "replace", "default", "via", gateway, "dev", "eth0"],
    ):
        subprocess.run(["ip", "-n", ns, *args], check=True)


def test_pod_cannot_reach_node_services_but_other_traffic_flows(env: Env) -> None:
    node = env.node_ip("node-1")
    wait_for(lambda: env.verdict("g/a", node, 10250) == probe.TIMEOUT, what="kubelet port guarded")
    for port in GUARDED:
        assert env.verdict("g/a", node, port) == probe.TIMEOUT, port
    assert env.verdict("g/a", node, 30080, "udp") == probe.TIMEOUT  # NodePorts: UDP too
    for proto in ("tcp", "udp"):
        assert env.verdict("g/a", METADATA, OPEN, proto) == probe.TIMEOUT  # metadata: any port
        assert env.verdict("g/a", METADATA, 80, proto) == probe.TIMEOUT  # not even refused
        assert env.verdict("g/a", node, OPEN, proto) == probe.OK  # not a guarded service
    assert env.verdict("g/a", env.cluster.pods["g/b"].ipv4, 80) == probe.OK  # pods still talk


def test_the_node_is_guarded_over_ipv6_too(env: Env) -> None:
    node6 = env.node_ip("node-1", 6)
    wait_for(lambda: env.verdict("g/a", node6, 10250) == probe.TIMEOUT, what="IPv6 kubelet")
    for port in GUARDED:
        assert env.verdict("g/a", node6, port) == probe.TIMEOUT, port
    assert env.verdict("g/a", node6, OPEN) == probe.OK
    assert env.verdict("g/a", env.cluster.pods["g/b"].ipv6 or "", 80) == probe.OK
    assert env.verdict("infra/agent", node6, 10250) == probe.OK  # exempt over IPv6 as well


def test_the_pods_gateway_and_extra_addresses_are_guarded(env: Env) -> None:
    # The gateway answers like any node address (its listeners bind 0.0.0.0): guarded for the
    # pod routing through it, though no Node object names it.
    wait_for(lambda: env.verdict("g/c", GATEWAY, 10250) == probe.TIMEOUT, what="gateway")
    for port in GUARDED:
        assert env.verdict("g/c", GATEWAY, port) == probe.TIMEOUT, port
    assert env.verdict("g/c", GATEWAY, OPEN) == probe.OK
    for address in (EXTRA, EXTRA6):
        for port in GUARDED:
            assert env.verdict("g/a", address, port) == probe.TIMEOUT, (address, port)
        assert env.verdict("g/a", address, OPEN) == probe.OK, address
        assert env.verdict("infra/agent", address, 10250) == probe.OK, address


def test_the_ipv6_metadata_address_is_dropped_on_every_port(env: Env) -> None:
    for port in (80, OPEN):
        assert env.verdict("g/a", METADATA6, port) == probe.TIMEOUT
    wait_for(
        lambda: env.flows("node-guard", METADATA6_FOLDED),
        timeout=10,
        what="a node-guard drop to the IPv6 metadata address in the flow log",
    )


def test_every_node_is_guarded_not_only_our_own(env: Env) -> None:
    other = env.node_ip("node-2")
    wait_for(
        lambda: env.verdict("g/a", other, 10250) == probe.TIMEOUT, what="node-2 kubelet guarded"
    )
    assert env.verdict("g/a", other, 22) == probe.TIMEOUT
    assert env.verdict("g/a", other, OPEN) == probe.OK


def test_exempt_namespace_reaches_the_node(env: Env) -> None:
    node = env.node_ip("node-1")
    wait_for(lambda: env.verdict("g/a", node, 10250) == probe.TIMEOUT, what="guard in place")
    for port in NODE_PORTS:
        assert env.verdict("infra/agent", node, port) == probe.OK, port
    assert env.verdict("infra/agent", METADATA, OPEN) == probe.OK
    # Taking the exemption away guards that namespace too.
    env.cluster.label_namespace("infra", {"podseg.io/node-guard": None})
    try:
        wait_for(
            lambda: env.verdict("infra/agent", node, 10250) == probe.TIMEOUT,
            what="guard after the exemption is removed",
        )
    finally:
        env.cluster.label_namespace("infra", {"podseg.io/node-guard": "off"})
    wait_for(lambda: env.verdict("infra/agent", node, 10250) == probe.OK, what="exemption restored")


def test_node_still_reaches_ingress_isolated_pods(env: Env) -> None:
    env.cluster.apply_policy(
        {
            "metadata": {"namespace": "g", "name": "deny-ingress-a"},
            "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"]},
        }
    )
    try:
        b_to_a = lambda: env.verdict("g/b", env.cluster.pods["g/a"].ipv4, 80)  # noqa: E731
        wait_for(lambda: b_to_a() == probe.TIMEOUT, what="a isolated")
        assert env.from_node("node-1", "g/a") == probe.OK  # kubelet probes still get in
    finally:
        env.cluster.delete_policy("g", "deny-ingress-a")
