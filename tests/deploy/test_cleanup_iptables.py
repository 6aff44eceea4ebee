"""`podseg cleanup` also removes what the iptables backend leaves (PODSEG- chains and jumps in
both families, PODSEG- ipsets, the netdev egress-drop table) and nothing foreign.

Namespaces are made here (`psg-*`) and reached only through a private `--netns-dir` with
`--no-proc-scan`, as in test_cleanup.py, so no other run's namespaces can be touched.
"""

from __future__ import annotations

import asyncio
import pathlib
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import apply_pod, privilege
from tests.support.cleanup import run_cleanup
from tests.support.manifests import find

pytestmark = [
    privilege.requires_root,
    pytest.mark.skipif(not privilege.has("ipset"), reason="needs ipset (scripts/setup.sh)"),
]


def _in(name: str, *args: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", name, *args], check=True, capture_output=True, text=True
    ).stdout


def _apply_iptables(name: str) -> None:
    asyncio.run(apply_pod.apply(f"/run/netns/{name}", "iptables"))


@pytest.fixture
def node(tmp_path: pathlib.Path) -> Iterator[tuple[pathlib.Path, list[str]]]:
    run = secrets.token_hex(3)
    names = [f"psg-{run}-ci{i}" for i in range(2)]
    netns_dir = tmp_path / "netns"
    netns_dir.mkdir()
    try:
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True)
            _in(name, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
            _in(name, "ip", "link", "set", "eth0", "up")
            _in(name, "iptables", "-N", "FOREIGN")
            _in(name, "iptables", "-A", "INPUT", "-j", "FOREIGN")
            _in(name, "ipset", "create", "foreign", "hash:ip")
            (netns_dir / name).symlink_to(f"/run/netns/{name}")
        _apply_iptables(names[0])
        yield netns_dir, names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def test_cleanup_removes_iptables_backend_leftovers_only(
    node: tuple[pathlib.Path, list[str]],
) -> None:
    netns_dir, names = node
    dry = run_cleanup(netns_dir, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    listed = [line for line in dry.stdout.splitlines() if line.startswith("would remove: ")]
    assert len(listed) == 1 and f"/{names[0]} " in listed[0]
    assert "tables=netdev podseg+iptables+ip6tables+ipset" in listed[0]
    assert "PODSEG" in _in(names[0], "iptables-save", "-t", "filter")

    done = run_cleanup(netns_dir)
    assert done.returncode == 0, done.stderr + done.stdout
    for name in names:
        v4 = _in(name, "iptables-save", "-t", "filter")
        assert "PODSEG" not in v4 + _in(name, "ip6tables-save", "-t", "filter")
        assert "-A INPUT -j FOREIGN" in v4
        assert _in(name, "ipset", "list", "-n").split() == ["foreign"]
        assert "podseg" not in _in(name, "nft", "list", "tables")


@pytest.mark.skipif(not privilege.has("setpriv"), reason="needs setpriv (util-linux)")
def test_the_cleanup_daemonsets_capabilities_remove_iptables_leftovers(
    node: tuple[pathlib.Path, list[str]], rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """With exactly the capabilities deploy/cleanup grants: the leftovers hold a rule with a
    set match, which iptables-save can only print through a raw socket (NET_RAW); without it
    the namespace is a failure, never reported clean."""
    netns_dir, names = node
    clean = find(rendered["cleanup"], "DaemonSet", "podseg-cleanup")
    added = clean["spec"]["template"]["spec"]["initContainers"][1]["securityContext"]
    caps = [c.lower() for c in added["capabilities"]["add"]]
    without = ",".join(["-all", *(f"+{c}" for c in caps if c != "net_raw")])
    refused = run_cleanup(netns_dir, "--dry-run", caps=without)
    assert refused.returncode == 1 and "ipset" in refused.stdout + refused.stderr
    done = run_cleanup(netns_dir, caps=",".join(["-all", *(f"+{c}" for c in caps)]))
    assert done.returncode == 0, done.stderr + done.stdout
    assert "PODSEG" not in _in(names[0], "iptables-save", "-t", "filter")
    assert _in(names[0], "ipset", "list", "-n").split() == ["foreign"]
