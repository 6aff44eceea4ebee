"""The worker's incremental path against the real kernel: generations, patch, refusal."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import Iterator

import pytest

from agent.calc import intervals, ruleset
from agent.dataplane import client as dp_client
from agent.dataplane import netns, protocol
from agent.dataplane.nft import incremental
from agent.dataplane.nft import render as render_nft
from tests.support import dataplane as dpt


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def pod_netns() -> Iterator[str]:
    name = f"psg-{secrets.token_hex(3)}-wi"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        _ip("-n", name, "addr", "add", "198.18.7.19/16", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _rs(*peers: str) -> ruleset.PodRuleset:
    return ruleset.PodRuleset(
        "x",
        "a",
        ingress=ruleset.DirectionRuleset(
            isolated=True,
            any_port_peers=intervals.merge_addrs(intervals.address_range(p) for p in peers),
            policies=("x/allow",),
        ),
    )


def test_patch_commits_only_on_the_generation_of_our_last_commit(pod_netns: str) -> None:
    async def scenario() -> None:
        client = dp_client.WorkerClient(timeout=10)
        try:
            index = netns.Index(await client.scan("/run/netns", proc=False))
            target = index.find(["198.18.7.19"])
            assert target is not None
            one = render_nft.render(_rs("198.18.1.1"), target.interfaces)
            two = render_nft.render(_rs("198.18.1.1", "198.18.1.9"), target.interfaces)
            three = render_nft.render(_rs("198.18.1.9"), target.interfaces)
            committed = await dpt.apply(client, target, one.script)
            digest, generation = committed.digest, committed.generation
            assert digest and generation is not None
            assert await dpt.generation(client, target) == generation
            script = incremental.patch(one, two)
            assert script
            patched = await dpt.patch(client, target, script, generation)
            vouched, after = patched.applied and patched.sole, patched.generation
            assert vouched and after == (generation + 1) & 0xFFFFFFFF
            assert await dpt.fingerprint(client, target) == two.fingerprint
            # Someone else commits in the namespace (here: an unrelated table): refused,
            # nothing applied, and the caller learns the current generation.
            subprocess.run(
                ["ip", "netns", "exec", pod_netns, "nft", "add", "table", "ip", "other"],
                check=True,
            )
            script = incremental.patch(two, three)
            assert script
            patched = await dpt.patch(client, target, script, after or 0)
            vouched, now = patched.applied and patched.sole, patched.generation
            assert not vouched and now is not None and now != after
            assert await dpt.fingerprint(client, target) == two.fingerprint
            # A patch that nft rejects is a typed error and changes nothing.
            with pytest.raises(protocol.ApplyFailed):
                await dpt.patch(
                    client,
                    target,
                    "delete element inet podseg ingress_any4 { 10.9.9.9 }\n",
                    now or 0,
                )
            assert await dpt.fingerprint(client, target) == two.fingerprint
        finally:
            await client.close()

    asyncio.run(scenario())
