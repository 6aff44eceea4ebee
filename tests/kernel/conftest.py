"""Fixtures of the kernel tier: throwaway network namespaces, deleted again even when a test
fails. Every name is `psg-<random6>-...`; the root namespace is never touched."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.kernel import link_local, run


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"psg-{secrets.token_hex(3)}-render"
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        for dev in ("lo", "eth0", "eth0p"):
            run("ip", "-n", name, "link", "set", dev, "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@pytest.fixture
def two_netns() -> Iterator[tuple[str, str]]:
    """Two bare namespaces with an `eth0`: one programmed step by step (patches), one applied
    afresh each step, for tests comparing what the two hold."""
    names = [f"psg-{secrets.token_hex(3)}-two{i}" for i in range(2)]
    try:
        for name in names:
            run("ip", "netns", "add", name)
            run("ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
            run("ip", "-n", name, "link", "set", "eth0", "up")
        yield names[0], names[1]
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@pytest.fixture
def pod_and_peer(netns: str) -> Iterator[tuple[str, str]]:
    """`netns` as the pod (198.18.0.10 on eth0) and a peer namespace (198.18.0.20)."""
    peer = netns.replace("-render", "-rpeer")
    run("ip", "netns", "add", peer)
    try:
        run("ip", "-n", netns, "link", "set", "eth0p", "netns", peer)
        run("ip", "-n", netns, "addr", "add", "198.18.0.10/16", "dev", "eth0")
        run("ip", "-n", peer, "addr", "add", "198.18.0.20/16", "dev", "eth0p")
        run("ip", "-n", peer, "link", "set", "eth0p", "up")
        run("ip", "-n", peer, "link", "set", "lo", "up")
        yield netns, peer
    finally:
        subprocess.run(["ip", "netns", "del", peer], capture_output=True, check=False)


@pytest.fixture
def dual_stack(pod_and_peer: tuple[str, str]) -> Iterator[tuple[str, str]]:
    """`pod_and_peer` with IPv6 too: fd00:198:18::10 and ::20 (one /64, no duplicate address
    detection), the pod's link-local address ready."""
    pod, peer = pod_and_peer
    for ns, dev, address in ((pod, "eth0", "fd00:198:18::10"), (peer, "eth0p", "fd00:198:18::20")):
        run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0")
        run("ip", "-n", ns, "addr", "add", f"{address}/64", "dev", dev, "nodad")
    link_local(pod, "eth0")
    yield pod, peer
