"""The worker does not keep the memory of big commands: a namespace's libnftables context that
committed or listed big sets is closed after the request, one that ran small commands (element
patches) is kept; and it keeps at most `max_contexts` open, closing the least recently used.
In-process `Namespaces` against real namespaces (`psg-<random6>-shed`, `-shed2`)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from agent.calc import ruleset
from agent.dataplane import protocol
from agent.dataplane.nft import incremental
from agent.dataplane.nft import render as render_nft
from agent.dataplane.worker import namespaces
from agent.dataplane.worker import nft as worker_nft
from tests.support import kernel

BASE = 0xC6130000  # 198.19.0.0


@pytest.fixture
def pod_netns() -> Iterator[str]:
    with kernel.pod_netns("shed") as name:
        yield name


def rs(n: int, extra: int = 0) -> ruleset.PodRuleset:
    peers = tuple(ruleset.AddrRange(4, BASE + 2 * i, BASE + 2 * i) for i in range(n))
    if extra:
        peers += (ruleset.AddrRange(4, BASE + 2 * n + extra, BASE + 2 * n + extra),)
    direction = ruleset.DirectionRuleset(isolated=True, any_port_peers=peers, policies=("a/b",))
    return ruleset.PodRuleset("a", "b", ingress=direction)


def test_big_commands_close_their_context_small_ones_keep_it(pod_netns: str) -> None:
    path = f"/run/netns/{pod_netns}"
    ino = os.stat(path).st_ino
    ns = namespaces.Namespaces()
    try:
        # A namespace without podseg's tables gets its first commit in two steps, the
        # elements through netlink; a commit over existing tables is one libnftables script.
        small = render_nft.render(rs(1), ["eth0"])
        worker_nft.commit(ns, protocol.Commit(path, ino, small.script))
        ns.shed()
        big = render_nft.render(rs(3000), ["eth0"])
        assert len(big.script) > namespaces.HEAVY_BYTES
        committed = worker_nft.commit(ns, protocol.Commit(path, ino, big.script))
        assert ns.shed() == 1 and not ns.contexts
        # The next command opens a fresh context and finds the table as committed.
        found = worker_nft.glance(ns, protocol.Glance(path, ino))
        assert found.fingerprint == big.fingerprint and found.generation == committed.generation
        ns.shed()
        # A one-element patch is small: its context stays open for the next one.
        bigger = render_nft.render(rs(3000, extra=3), ["eth0"])
        script = incremental.patch(big, bigger)
        assert script and len(script) < namespaces.HEAVY_BYTES
        patched = worker_nft.patch(ns, protocol.Patch(path, ino, script, committed.generation or 0))
        assert patched.applied and patched.sole
        assert ns.shed() == 0 and len(ns.contexts) == 1
        # Listing the big table is heavy too.
        worker_nft.inspect(ns, protocol.Inspect(path, ino))
        assert ns.shed() == 1 and not ns.contexts
    finally:
        ns.forget(None)


def test_at_most_max_contexts_stay_open_least_recently_used_first(pod_netns: str) -> None:
    other = pod_netns.replace("-shed", "-shed2")
    subprocess.run(["ip", "netns", "add", other], check=True)
    ns = namespaces.Namespaces(max_contexts=1)
    try:
        first, second = (
            (f"/run/netns/{n}", os.stat(f"/run/netns/{n}").st_ino) for n in (pod_netns, other)
        )
        worker_nft.glance(ns, protocol.Glance(*first))
        (opened,) = ns.contexts
        assert opened[1] == first[1]
        worker_nft.glance(ns, protocol.Glance(*second))
        assert [ident[1] for ident in ns.contexts] == [second[1]]
        assert ns.evicted and ns.shed() == 0 and not ns.evicted
        # The evicted namespace still answers (a fresh context).
        assert worker_nft.glance(ns, protocol.Glance(*first)).generation is not None
        assert [ident[1] for ident in ns.contexts] == [first[1]]
    finally:
        ns.forget(None)
        subprocess.run(["ip", "netns", "del", other], capture_output=True, check=False)


def test_counters_are_read_without_a_context_and_equal_nfts_own_listing(pod_netns: str) -> None:
    """A counters read opens no libnftables context (whose cache would keep the peer sets),
    and gives each podseg counter's packets by table family, nothing of other tables."""
    path = f"/run/netns/{pod_netns}"
    ino = os.stat(path).st_ino
    extra = (
        "table inet other { counter theirs { packets 9 bytes 9; }; }\n"
        "table netdev podseg { counter spoofed { packets 7 bytes 70; }; }\n"
        "table inet podseg { counter extra { packets 1234567890123 bytes 1; };"
        " quota q { 25 mbytes; }; }\n"
    )
    for script in (render_nft.render(rs(3000), ["eth0"]).script, extra):
        subprocess.run(
            ["ip", "netns", "exec", pod_netns, "nft", "-f", "-"],
            input=script,
            text=True,
            check=True,
        )
    listed = subprocess.run(
        ["ip", "netns", "exec", pod_netns, "nft", "-j", "list", "counters"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    expected: dict[str, int] = {}
    for item in json.loads(listed)["nftables"]:
        counter = item.get("counter")
        if counter and counter["table"] == "podseg":
            expected[counter["name"]] = counter["packets"]
    assert expected["extra"] == 1234567890123 and expected["spoofed"] == 7
    ns = namespaces.Namespaces()
    try:
        found = worker_nft.counters(ns, protocol.CounterTarget("k", path, ino))
        assert found == expected and "theirs" not in found
        assert worker_nft.netdev_counters(ns, path, ino) == {"spoofed": 7}
        assert not ns.contexts  # no libnftables context, so no cache of the sets
        assert worker_nft.counters(ns, protocol.CounterTarget("k", path, ino)) == expected
    finally:
        ns.forget(None)
    subprocess.run(["ip", "netns", "del", pod_netns], check=True)
    gone = namespaces.Namespaces()
    assert worker_nft.counters(gone, protocol.CounterTarget("k", path, ino)) is None
