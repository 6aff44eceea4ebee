"""The worker's own rtnetlink listing (agent.dataplane.linkaddrs) equals pyroute2's view of a
real namespace: names, both families, several addresses per interface, loopback left out."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

PYROUTE2_VIEW = """
import json, pyroute2
with pyroute2.IPRoute() as ipr:
    names = {l["index"]: l.get_attr("IFLA_IFNAME") for l in ipr.get_links()}
    addrs = {}
    for m in ipr.get_addr():
        if m.get_attr("IFA_ADDRESS"):
            addrs.setdefault(m["index"], []).append(str(m.get_attr("IFA_ADDRESS")))
print(json.dumps([{"name": names.get(i, ""), "addrs": sorted(a)}
                  for i, a in sorted(addrs.items()) if names.get(i) != "lo"]))
"""
OURS = (
    "import json; from agent.dataplane import linkaddrs; print(json.dumps(linkaddrs.interfaces()))"
)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def pod_netns() -> Iterator[str]:
    name = f"psg-{secrets.token_hex(3)}-la"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
        _ip("-n", name, "addr", "add", "198.18.7.41/16", "dev", "eth0")
        _ip("-n", name, "addr", "add", "fd00:198:18::41/64", "dev", "eth0", "nodad")
        _ip("-n", name, "link", "set", "eth0", "up")
        _ip("-n", name, "link", "add", "net1", "type", "veth", "peer", "name", "peer1")
        _ip("-n", name, "addr", "add", "198.19.0.9/24", "dev", "net1")
        _ip("-n", name, "addr", "add", "198.19.0.8/24", "dev", "net1")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _inside(name: str, code: str) -> Any:
    out = subprocess.run(
        ["ip", "netns", "exec", name, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def test_listing_equals_pyroute2s(pod_netns: str) -> None:
    ours = _inside(pod_netns, OURS)
    assert ours == _inside(pod_netns, PYROUTE2_VIEW)
    by_name = {i["name"]: i["addrs"] for i in ours}
    assert "lo" not in by_name
    assert {"198.18.7.41", "fd00:198:18::41"} <= set(by_name["eth0"])
    assert by_name["net1"] == ["198.19.0.8", "198.19.0.9"]
