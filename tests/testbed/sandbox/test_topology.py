"""The sandbox really builds an isolated, routed fake cluster and tells allowed from blocked.

Root only: real network namespaces, veths and nftables rules, all inside namespaces named
`psg-<run>-...` that the fixtures delete again, also on failure.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from testbed.sandbox import iproute, probe, topology
from tests.support import privilege

pytestmark = privilege.requires_root

needs_nft = pytest.mark.skipif(shutil.which("nft") is None, reason="needs the nft tool")


def _sandbox_like_root_links() -> set[str]:
    """Links in the root namespace named like the sandbox's (there must be none)."""
    result = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True, timeout=10
    )
    names = {line.split(":")[1].strip().split("@")[0] for line in result.stdout.splitlines()}
    return {name for name in names if re.fullmatch(r"psg.*|vp[0-9]+", name)}


def _nft(netns: str, script: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-f", "-"],
        input=script,
        text=True,
        check=True,
        timeout=10,
    )


@pytest.fixture(scope="module")
def sandbox() -> Iterator[topology.Sandbox]:
    """Two nodes, pods ns-a/a1 and ns-a/a2 on node-1 and ns-b/b1 on node-2."""
    with topology.Sandbox() as box:
        node1 = box.add_node("node-1")
        node2 = box.add_node("node-2")
        box.add_pods(node1, [("ns-a", "a1"), ("ns-a", "a2")])
        box.add_pod(node2, "ns-b", "b1")
        yield box


@pytest.fixture
def extra_pod(sandbox: topology.Sandbox) -> Iterator[topology.SandboxPod]:
    """A pod of its own, for tests that change its namespace; removed afterwards."""
    pod = sandbox.add_pod(sandbox.node("node-2"), "ns-c", f"c{time.monotonic_ns() % 10**6}")
    yield pod
    if pod.key in {p.key for p in sandbox.pods}:
        sandbox.remove_pod(pod)


def test_addressing_follows_the_plan(sandbox: topology.Sandbox) -> None:
    node1, node2 = sandbox.nodes
    assert (node1.ipv4, node1.ipv6, node1.pod_cidr_v4) == (
        "198.18.0.1",
        "fd00:198:18:1::1",
        "198.18.0.0/17",
    )
    assert (node2.ipv4, node2.ipv6, node2.pod_cidr_v4) == (
        "198.18.128.1",
        "fd00:198:18:2::1",
        "198.18.128.0/17",
    )
    a1, a2, b1 = sandbox.pods
    assert (a1.ipv4, a1.ipv6) == ("198.18.1.1", "fd00:198:18:1::1:1")
    assert (a2.ipv4, a2.ipv6) == ("198.18.1.2", "fd00:198:18:1::1:2")
    assert (b1.ipv4, b1.ipv6) == ("198.18.129.1", "fd00:198:18:2::129:1")
    assert a1.netns == f"psg-{sandbox.run_id}-ns-a-a1"
    assert a1.netns_path == f"/run/netns/{a1.netns}"
    assert pathlib.Path(a1.netns_path).exists()
    assert a1.interface == "eth0"


@pytest.mark.parametrize("family", [4, 6])
def test_every_pod_reaches_every_pod(sandbox: topology.Sandbox, family: int) -> None:
    actual = probe.probe_matrix(sandbox.pods, family=family, timeout=2.0)
    expected = probe.expected_matrix(sandbox.pods, family=family)
    assert len(actual) == 3 * 3 * 2 * 2
    assert probe.diff_matrix(expected, actual) == [], probe.format_diff(expected, actual)


def test_closed_port_is_refused(sandbox: topology.Sandbox) -> None:
    a1, _, b1 = sandbox.pods
    assert probe.probe(a1, b1.ipv4, 9, "tcp") == "refused"
    assert probe.probe(a1, b1.ipv4, 9, "udp") == "refused"
    assert b1.ipv6 is not None
    assert probe.probe(a1, b1.ipv6, 9, "tcp") == "refused"


@needs_nft
def test_input_drop_in_a_pod_gives_timeout(
    sandbox: topology.Sandbox, extra_pod: topology.SandboxPod
) -> None:
    _nft(
        extra_pod.netns,
        "table inet t {\n chain input {\n  type filter hook input priority 0; policy accept;\n"
        '  iif "eth0" drop\n }\n}\n',
    )
    others = [pod for pod in sandbox.pods if pod is not extra_pod]
    for family in (4, 6):
        actual = probe.probe_matrix(others, destinations=[extra_pod], family=family, timeout=0.5)
        assert actual, "no probes ran"
        assert set(actual.values()) == {"timeout"}, probe.format_matrix(actual)
    # The rest of the cluster is untouched.
    rest = probe.probe_matrix(others, timeout=1.0)
    assert set(rest.values()) == {"ok"}, probe.format_matrix(rest)


@needs_nft
def test_output_drop_shows_as_eperm_for_udp(
    sandbox: topology.Sandbox, extra_pod: topology.SandboxPod
) -> None:
    """The kernel fact the prober must recognise: a local output drop fails UDP send()."""
    _nft(
        extra_pod.netns,
        "table inet t {\n chain output {\n  type filter hook output priority 0; policy accept;\n"
        '  oif "eth0" drop\n }\n}\n',
    )
    a1 = sandbox.pods[0]
    assert probe.probe(extra_pod, a1.ipv4, 80, "udp", 0.5) == "eperm"
    assert probe.probe(extra_pod, a1.ipv4, 80, "tcp", 0.5) == "timeout"


def test_remove_pod_removes_its_namespace(
    sandbox: topology.Sandbox, extra_pod: topology.SandboxPod
) -> None:
    pid = extra_pod.pid
    assert pid is not None and pathlib.Path(f"/proc/{pid}").exists()
    sandbox.remove_pod(extra_pod)
    assert extra_pod.netns not in iproute.list_netns()
    assert extra_pod.key not in {pod.key for pod in sandbox.pods}
    assert not pathlib.Path(f"/proc/{pid}").exists()
    links = subprocess.run(
        ["ip", "-n", sandbox.node("node-2").netns, "-o", "link", "show"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    assert f" {extra_pod.host_interface}@" not in links


def _bridge_mac(netns: str) -> str:
    out = subprocess.run(
        ["ip", "-n", netns, "-o", "link", "show", topology.BRIDGE],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    match = re.search(r"link/ether ([0-9a-f:]{17})", out)
    assert match, out
    return match.group(1)


def test_bridge_mac_stays_put_as_pods_come_and_go(sandbox: topology.Sandbox) -> None:
    """A bridge takes its lowest port's MAC unless set: removing a pod would then change the
    gateway's MAC under the other pods' ARP caches and cut them off for tens of seconds."""
    node = sandbox.node("node-1")
    before = _bridge_mac(node.netns)
    assert before == topology.bridge_mac(node.index)
    extra = [sandbox.add_pod(node, "macs", f"m{i}") for i in range(4)]
    assert _bridge_mac(node.netns) == before
    for pod in extra:
        sandbox.remove_pod(pod)
    assert _bridge_mac(node.netns) == before
    a, b = sandbox.pods[0], sandbox.pods[1]
    assert probe.probe(a, b.ipv4, 80, "tcp") == probe.OK


def test_pod_names_are_shortened_and_unique() -> None:
    with topology.Sandbox() as box:
        node = box.add_node("ns-x")
        long_ns = "a" * 100
        pod = box.add_pod(node, long_ns, "b" * 100, ipv6=False)
        clash = box.add_pod(node, "ns", "x")  # psg-<run>-ns-x is the node's namespace already
        assert len(pod.netns) <= topology.MAX_NETNS_NAME
        assert pod.netns.startswith(box.prefix)
        assert pod.ipv6 is None
        assert clash.netns != node.netns
        assert probe.probe(pod, clash.ipv4, 80, "tcp") == "ok"
        with pytest.raises(ValueError):
            box.add_pod(node, "ns", "x")
        with pytest.raises(ValueError):
            box.add_pod(node, "Bad_Name", "x")


def test_close_leaves_nothing_behind() -> None:
    links_before = _sandbox_like_root_links()
    box = topology.Sandbox()
    try:
        node1 = box.add_node("node-1")
        node2 = box.add_node("node-2")
        pods = [box.add_pod(node1, "ns", "p1"), box.add_pod(node2, "ns", "p2")]
        pids = [pod.pid for pod in pods]
        workdir = box.workdir
        assert _sandbox_like_root_links() == links_before, "no sandbox link in the root netns"
        assert probe.probe(pods[0], pods[1].ipv4, 81, "udp") == "ok"
    finally:
        box.close()
    assert not [name for name in iproute.list_netns() if name.startswith(box.prefix)]
    for pid in pids:
        assert not pathlib.Path(f"/proc/{pid}").exists()
    assert not workdir.exists()
    assert _sandbox_like_root_links() == links_before
    box.close()  # idempotent
    with pytest.raises(topology.SandboxError):
        box.add_node("again")


def test_failed_build_is_cleaned_up() -> None:
    box = topology.Sandbox()
    taken = f"{box.prefix}ns-p1"
    subprocess.run(["ip", "netns", "add", taken], check=True, timeout=10)  # ours to delete
    try:
        node = box.add_node("node-1")
        with pytest.raises(topology.SandboxError):
            box.add_pod(node, "ns", "p1")
    finally:
        box.close()
    assert not [name for name in iproute.list_netns() if name.startswith(box.prefix)]
