"""The dataplane worker against the real kernel: scan, apply, observe, vanished namespaces."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from collections.abc import Iterator

import pytest

from agent.calc import ruleset
from agent.dataplane import client as dp_client
from agent.dataplane import netns, protocol
from agent.dataplane.nft import render as render_nft
from tests.support import dataplane as dpt
from tests.support.polling import wait_for


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def pod_netns() -> Iterator[str]:
    name = f"psg-{secrets.token_hex(3)}-wk"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        _ip("-n", name, "addr", "add", "198.18.7.9/16", "dev", "eth0")
        _ip("-n", name, "addr", "add", "fd00:198:18::7:9/64", "dev", "eth0", "nodad")
        _ip("-n", name, "link", "set", "eth0", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _isolated() -> ruleset.PodRuleset:
    peer = ruleset.AddrRange(4, int.from_bytes(bytes([198, 18, 1, 1])), 0xC612_0101)
    return ruleset.PodRuleset(
        namespace="x",
        pod="a",
        ingress=ruleset.DirectionRuleset(
            isolated=True,
            port_peers=(ruleset.PeerPort(peer, 6, ruleset.PortRange(80, 80)),),
            policies=("x/deny",),
        ),
    )


def test_scan_finds_pod_namespace_by_ip_and_apply_observe_roundtrip(pod_netns: str) -> None:
    async def scenario() -> None:
        client = dp_client.WorkerClient(timeout=10)
        try:
            index = netns.Index(await client.scan("/run/netns", proc=True))
            target = index.find(["198.18.7.9", "fd00:198:18::7:9"])
            assert target is not None
            assert target.path == f"/run/netns/{pod_netns}"
            assert target.interfaces == ("eth0",)
            assert await dpt.fingerprint(client, target) is None
            rendered = render_nft.render(_isolated(), target.interfaces)
            await dpt.apply(client, target, rendered.script)
            assert await dpt.fingerprint(client, target) == rendered.fingerprint
            listing = subprocess.run(
                ["ip", "netns", "exec", pod_netns, "nft", "list", "table", "inet", "podseg"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            assert "198.18.1.1 . tcp . 80" in listing
            # Re-applying is one transaction over the existing table, never an error.
            await dpt.apply(client, target, rendered.script)
            with pytest.raises(protocol.ApplyFailed):
                await dpt.apply(client, target, "table inet podseg { chain c { bogus } }")
            assert await dpt.fingerprint(client, target) == rendered.fingerprint  # old rules intact
            wrong = netns.Target(target.path, target.ino + 1, target.interfaces)
            with pytest.raises(protocol.NetnsGone):
                await dpt.apply(client, wrong, rendered.script)
        finally:
            await client.close()

    asyncio.run(scenario())


def test_vanished_namespace_is_a_typed_error_not_a_crash(pod_netns: str) -> None:
    async def scenario() -> None:
        client = dp_client.WorkerClient(timeout=10)
        try:
            target = netns.Index(await client.scan("/run/netns", proc=False)).find(["198.18.7.9"])
            assert target is not None
            await client.forget(None)
            _ip("netns", "del", pod_netns)
            with pytest.raises(protocol.NetnsGone):
                await dpt.apply(client, target, render_nft.delete_script())
            assert await dpt.pid(client) > 0  # the worker survived
        finally:
            await client.close()

    asyncio.run(scenario())


def test_root_namespace_is_never_a_candidate() -> None:
    async def scenario() -> set[int]:
        client = dp_client.WorkerClient(timeout=10)
        try:
            return {c.ino for c in await client.scan("/run/netns", proc=True)}
        finally:
            await client.close()

    host_ino = os.stat("/proc/self/ns/net").st_ino
    assert host_ino not in asyncio.run(scenario())


def test_namespace_reachable_only_through_a_process_is_found_via_proc() -> None:
    name = f"psg-{secrets.token_hex(3)}-proc"
    _ip("netns", "add", name)
    holder: subprocess.Popen[bytes] | None = None
    try:
        _ip("-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        _ip("-n", name, "addr", "add", "198.18.7.77/16", "dev", "eth0")
        holder = subprocess.Popen(
            ["ip", "netns", "exec", name, "sleep", "60"], stdin=subprocess.DEVNULL
        )
        wait_for(
            lambda: (
                os.stat(f"/proc/{holder.pid}/ns/net").st_ino == os.stat(f"/run/netns/{name}").st_ino
            ),
            what="holder process inside the namespace",
        )
        _ip("netns", "del", name)  # no name left: only /proc/<pid>/ns/net leads there

        async def scenario() -> netns.Target | None:
            client = dp_client.WorkerClient(timeout=10)
            try:
                named = netns.Index(await client.scan("/run/netns", proc=False))
                assert named.find(["198.18.7.77"]) is None
                return netns.Index(await client.scan("/run/netns", proc=True)).find(["198.18.7.77"])
            finally:
                await client.close()

        target = asyncio.run(scenario())
        assert target is not None and target.path == f"/proc/{holder.pid}/ns/net"
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
