"""The agent container's capabilities (deploy/daemonset.yaml) suffice for both backends.

The agent and its dataplane worker run here under a capability bounding set of exactly what
the DaemonSet adds (`setpriv`, as `tests/deploy/test_cleanup.py` does for the cleanup), and
commit a ruleset whose peers sit in a set in a real namespace. The iptables backend needs
`NET_RAW`: iptables' `set` match reaches ipset through a raw socket, and without it every
`iptables-restore` fails with "Can't open socket to ipset." (which left every pod of a real
cluster unenforced); the last check shows that this test sees that failure."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import kernel, privilege
from tests.support.manifests import find

pytestmark = [
    privilege.requires_root,
    pytest.mark.skipif(
        not privilege.has("setpriv", "ipset", "iptables-restore"),
        reason="needs setpriv, ipset and iptables (scripts/setup.sh)",
    ),
]

ROOT = pathlib.Path(__file__).resolve().parents[2]


def granted(rendered: dict[str, list[dict[str, Any]]]) -> list[str]:
    agent = find(rendered["base"], "DaemonSet", "podseg-agent")
    caps = agent["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    return [c.lower() for c in caps["add"]]


def apply_with(path: str, backend: str, caps: list[str]) -> subprocess.CompletedProcess[str]:
    bounding = ",".join(["-all", *(f"+{c}" for c in caps)])
    return subprocess.run(
        [
            *("setpriv", f"--bounding-set={bounding}"),
            *(sys.executable, "-m", "tests.support.apply_pod", path, backend),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture
def pod_netns() -> Iterator[str]:
    with kernel.pod_netns("cap") as name:
        yield name


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_the_daemonset_capabilities_let_the_agent_program_a_pod(
    rendered: dict[str, list[dict[str, Any]]], pod_netns: str, backend: str
) -> None:
    done = apply_with(f"/run/netns/{pod_netns}", backend, granted(rendered))
    assert done.returncode == 0, done.stderr
    command, mark = {
        "iptables": (("iptables-save", "-t", "filter"), "--match-set PODSEG"),
        "nftables": (("nft", "list", "tables"), "inet podseg"),
    }[backend]
    held = subprocess.run(
        ["ip", "netns", "exec", pod_netns, *command], capture_output=True, text=True, check=True
    ).stdout
    assert mark in held, held


def test_without_net_raw_the_iptables_backend_cannot_program_a_pod(
    rendered: dict[str, list[dict[str, Any]]], pod_netns: str
) -> None:
    caps = [c for c in granted(rendered) if c != "net_raw"]
    done = apply_with(f"/run/netns/{pod_netns}", "iptables", caps)
    assert done.returncode == 1
    assert "ipset" in done.stderr, done.stderr
