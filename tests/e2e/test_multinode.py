"""Two sandbox nodes, one agent each: peers on the other node are allowed or denied exactly
like local ones, for IPv4 and IPv6, ingress and egress."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import probe
from tests.support.polling import wait_for

# pod -> (node, labels)
LAYOUT = {
    "m/server": ("node-1", {"role": "server"}),
    "m/client-local": ("node-1", {"role": "client"}),
    "m/other-local": ("node-1", {"role": "other"}),
    "m/client-remote": ("node-2", {"role": "client"}),
    "m/other-remote": ("node-2", {"role": "other"}),
}


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[sandbox_cluster.SandboxCluster]:
    with sandbox_cluster.SandboxCluster(nodes=("node-1", "node-2")) as cluster:
        cluster.ensure_namespace("m", {"ns": "m"})
        for key, (node, labels) in LAYOUT.items():
            cluster.add_pod("m", key.split("/")[1], labels, node=node)
        cluster.start_agent("node-1")
        cluster.start_agent("node-2")
        yield cluster


def _expect(allowed: set[tuple[str, str]]) -> dict[probe.MatrixKey, str]:
    return {
        (s, d, port, "tcp"): probe.OK if s == d or (s, d) in allowed else probe.TIMEOUT
        for s in LAYOUT
        for d in LAYOUT
        for port in (80, 81)
    }


@pytest.mark.parametrize("family", [4, 6])
def test_remote_peers_are_treated_like_local_ones(
    two_nodes: sandbox_cluster.SandboxCluster, family: int
) -> None:
    cluster = two_nodes
    cluster.delete_all_policies()
    # Everything in m is isolated both ways; servers take clients; client-remote may only
    # reach the server (egress), other pods may reach anyone (egress allow-all).
    cluster.apply_policy(
        {
            "metadata": {"namespace": "m", "name": "deny-all"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        }
    )
    cluster.apply_policy(
        {
            "metadata": {"namespace": "m", "name": "server-from-clients"},
            "spec": {
                "podSelector": {"matchLabels": {"role": "server"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}],
            },
        }
    )
    cluster.apply_policy(
        {
            "metadata": {"namespace": "m", "name": "egress"},
            "spec": {
                "podSelector": {"matchExpressions": [{"key": "role", "operator": "Exists"}]},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"podSelector": {"matchLabels": {"role": "server"}}}]}],
            },
        }
    )
    pods = [cluster.pods[key] for key in LAYOUT]
    allowed = {("m/client-local", "m/server"), ("m/client-remote", "m/server")}
    expected = _expect(allowed)

    def converged() -> bool:
        matrix = probe.probe_matrix(
            pods, ports=(80, 81), protocols=("tcp",), family=family, timeout=0.8
        )
        return matrix == expected

    wait_for(converged, timeout=20, what="two-node truth table")
    # Relabel a remote pod: node-1's agent must move it into the allowed set.
    cluster.label_pod("m/other-remote", {"role": "client"})
    expected = _expect(allowed | {("m/other-remote", "m/server")})
    wait_for(converged, timeout=20, what="relabelled remote client allowed")
    cluster.label_pod("m/other-remote", {"role": "other"})


def node_probe(netns: str, ip: str, port: int = 80) -> str:
    """A TCP connect from a node namespace itself (as the kubelet's probes come)."""
    code = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)\n"
        "s.settimeout(0.8)\n"
        "try:\n s.connect((sys.argv[1], int(sys.argv[2]))); print('ok')\n"
        "except TimeoutError: print('timeout')\n"
        "except OSError as e: print('error', e)\n"
    )
    result = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", code, ip, str(port)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.strip()


def test_only_the_pods_own_node_gets_in(two_nodes: sandbox_cluster.SandboxCluster) -> None:
    cluster = two_nodes
    cluster.delete_all_policies()
    cluster.apply_policy(
        {
            "metadata": {"namespace": "m", "name": "deny-ingress"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        }
    )
    server = cluster.pods["m/server"]
    node1, node2 = cluster.nodes["node-1"].netns, cluster.nodes["node-2"].netns
    wait_for(
        lambda: (
            probe.probe(cluster.pods["m/client-local"], server.ipv4, 80, "tcp", 0.8)
            == probe.TIMEOUT
        ),
        what="ingress isolated",
    )
    for address in (server.ipv4, str(server.ipv6)):
        assert node_probe(node1, address) == "ok"  # the pod's own node: kubelet probes work
        assert node_probe(node2, address) == "timeout"  # another node is just a peer
