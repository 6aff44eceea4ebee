"""The worker's conntrack operations against the real kernel: list, mark and delete the
entries of one pod namespace (and never those of another)."""

from __future__ import annotations

import asyncio
import ctypes
import os
import secrets
import socket
import subprocess
from collections.abc import Iterator

import pytest

from agent.dataplane import client as dp_client
from agent.dataplane import conntrack, netns, protocol
from agent.dataplane.nft import render as render_nft
from tests.support import dataplane as dpt

# Connection tracking is on demand per namespace: any ct rule turns it on.
TRACK = "table inet t {\n chain c {\n type filter hook output priority 0;\n"
TRACK += " ct state new counter\n }\n}\n"


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:  # os.setns is Python 3.12+
    if _libc.setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def two_netns() -> Iterator[list[str]]:
    names = [f"psg-{secrets.token_hex(3)}-ct{i}" for i in range(2)]
    try:
        for i, name in enumerate(names):
            _ip("netns", "add", name)
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
            _ip("-n", name, "addr", "add", f"198.18.9.{i + 1}/32", "dev", "lo")
            _ip("-n", name, "link", "set", "eth0", "up")
            subprocess.run(
                ["ip", "netns", "exec", name, "nft", "-f", "-"], input=TRACK, text=True, check=True
            )
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _connect_inside(name: str, address: str) -> list[socket.socket]:
    """A TCP connection over the namespace's lo (sockets keep their namespace once made)."""
    host = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            server = socket.create_server((address, 0))
            client = socket.create_connection(server.getsockname()[:2], timeout=2)
            accepted, _ = server.accept()
        finally:
            _setns(host)
    finally:
        os.close(host)
        os.close(target)
    return [server, client, accepted]


def test_list_mark_and_delete_in_one_namespace_only(two_netns: list[str]) -> None:
    sockets = _connect_inside(two_netns[0], "198.18.9.1") + _connect_inside(
        two_netns[1], "198.18.9.2"
    )

    async def scenario() -> None:
        client = dp_client.WorkerClient(timeout=10)
        try:
            targets = [
                netns.Target(f"/run/netns/{n}", os.stat(f"/run/netns/{n}").st_ino, ("eth0",))
                for n in two_netns
            ]
            mine = [e for e in await dpt.conntrack(client, targets[0]) if e.proto == 6]
            assert [(e.src, e.dst) for e in mine] == [("198.18.9.1", "198.18.9.1")]
            t0 = targets[0]
            mark = protocol.ConntrackMark(t0.path, t0.ino, tuple(mine), render_nft.DENY_MARK)
            assert (await client.call(mark)).count == 1
            (marked,) = [e for e in await dpt.conntrack(client, targets[0]) if e.proto == 6]
            assert marked.mark & render_nft.DENY_MARK
            delete = protocol.ConntrackDelete(t0.path, t0.ino, (marked,))
            assert (await client.call(delete)).count == 1
            assert (await client.call(delete)).count == 0  # gone already
            assert not [e for e in await dpt.conntrack(client, targets[0]) if e.proto == 6]
            others = [e for e in await dpt.conntrack(client, targets[1]) if e.proto == 6]
            assert [(e.src, e.mark) for e in others] == [("198.18.9.2", 0)]  # untouched
        finally:
            await client.close()

    try:
        asyncio.run(scenario())
    finally:
        for s in sockets:
            s.close()


def test_the_namespace_count_is_its_own(two_netns: list[str]) -> None:
    """The count the worker checks before a dump is the namespace's, not the node's: 0 for a
    namespace without connections however many another one tracks."""

    def count(name: str) -> int:
        out = subprocess.run(
            ["ip", "netns", "exec", name, "cat", conntrack.COUNT_SYSCTL],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return int(out)

    assert count(two_netns[1]) == 0
    sockets = _connect_inside(two_netns[0], "198.18.9.1")
    try:
        assert count(two_netns[0]) >= 1
        assert count(two_netns[1]) == 0

        async def listed() -> list[protocol.ConntrackEntry]:
            client = dp_client.WorkerClient(timeout=10)
            try:
                path = f"/run/netns/{two_netns[1]}"
                target = netns.Target(path, os.stat(path).st_ino, ("eth0",))
                return await dpt.conntrack(client, target)
            finally:
                await client.close()

        assert asyncio.run(listed()) == []
    finally:
        for s in sockets:
            s.close()
