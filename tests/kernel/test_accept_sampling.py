"""Allowed-flow sampling against the real kernel, with both backends: a TCP connection that the
destination's ingress policy accepts is logged to NFLOG as `podseg accept ingress` (and the
source's egress accept as `podseg accept egress`) from inside the pods' namespaces, and a
denied connection is still logged as a drop. Only new connections are sampled: the packets
of an established connection never reach the policy chains."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from agent.calc import intervals, ruleset
from testbed.sandbox import probe, topology
from tests.support.kernel import BACKENDS, TCP, P, ReaderProc, commit


@pytest.fixture
def sandbox() -> Iterator[topology.Sandbox]:
    with topology.Sandbox() as box:
        yield box


def _addr(ip: str) -> ruleset.AddrRange:
    return intervals.address_range(ip)


def _prefixes(reader: ReaderProc, key: str) -> list[tuple[Any, ...]]:
    return [tuple(p) for m in reader.seen if m.get("key") == key for p in m.get("packets") or []]


def _connect_and_read(
    reader: ReaderProc, a: topology.SandboxPod, b: topology.SandboxPod
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Read both pods' namespaces, connect a -> b on TCP 80: (b's ingress accept samples, a's
    egress accept samples)."""
    for pod in (a, b):
        reader.send(
            op="open", key=pod.name, path=pod.netns_path, ino=os.stat(pod.netns_path).st_ino
        )
        reader.wait(lambda m, k=pod.name: m.get("opened") == k)
    assert probe.probe(a, b.ipv4, 80, "tcp", timeout=2.0) == probe.OK
    reader.wait(lambda m: any(p[0] == "podseg accept ingress" for p in m.get("packets") or []))
    reader.wait(lambda m: any(p[0] == "podseg accept egress" for p in m.get("packets") or []))
    accepted_in = [p for p in _prefixes(reader, "b") if p[0] == "podseg accept ingress"]
    accepted_out = [p for p in _prefixes(reader, "a") if p[0] == "podseg accept egress"]
    return accepted_in, accepted_out


@pytest.mark.parametrize("backend", BACKENDS)
def test_accepted_connection_is_sampled_and_drops_still_are(
    sandbox: topology.Sandbox, backend: str
) -> None:
    node = sandbox.add_node("n1")
    a = sandbox.add_pod(node, "x", "a", ipv6=False)
    b = sandbox.add_pod(node, "x", "b", ipv6=False)
    # b admits a on TCP 80 only; a may send to b on TCP 80 and 81 (so 81 dies at b's ingress)
    commit(
        b.netns,
        ruleset.PodRuleset(
            "x",
            "b",
            ingress=ruleset.DirectionRuleset(
                isolated=True,
                port_peers=(ruleset.PeerPort(_addr(a.ipv4), TCP, P(80, 80)),),
                policies=("x/web",),
            ),
        ),
        backend,
    )
    commit(
        a.netns,
        ruleset.PodRuleset(
            "x",
            "a",
            egress=ruleset.DirectionRuleset(
                isolated=True,
                port_peers=(ruleset.PeerPort(_addr(b.ipv4), TCP, P(80, 81)),),
                policies=("x/out",),
            ),
        ),
        backend,
    )
    reader = ReaderProc()
    try:
        accepted_in, accepted_out = _connect_and_read(reader, a, b)
        # one sample per connection (its SYN): the rest of the connection is established
        assert [(p[1], p[2], p[3], p[5]) for p in accepted_in] == [(a.ipv4, b.ipv4, TCP, 80)]
        assert [(p[1], p[2], p[3], p[5]) for p in accepted_out] == [(a.ipv4, b.ipv4, TCP, 80)]

        assert probe.probe(a, b.ipv4, 81, "tcp", timeout=0.5) == probe.TIMEOUT
        reader.wait(
            lambda m: any(p[0] == "podseg ingress policy enforce" for p in m.get("packets") or [])
        )
        dropped = [p for p in _prefixes(reader, "b") if p[0] == "podseg ingress policy enforce"]
        assert {(p[1], p[2], p[3], p[5]) for p in dropped} == {(a.ipv4, b.ipv4, TCP, 81)}
        # the denied connection was accepted by a's egress policy (sampled there), never by b's
        assert [p for p in _prefixes(reader, "b") if p[0] == "podseg accept ingress"] == (
            accepted_in
        )
        assert any(p[5] == 81 for p in _prefixes(reader, "a") if p[0] == "podseg accept egress")
    finally:
        reader.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_visibility_mode_samples_what_no_policy_covers(
    sandbox: topology.Sandbox, backend: str
) -> None:
    """A namespace in visibility mode with no policy yet: the connections its pods make and
    accept are sampled (what `podseg recommend` needs)."""
    node = sandbox.add_node("n1")
    a = sandbox.add_pod(node, "x", "a", ipv6=False)
    b = sandbox.add_pod(node, "x", "b", ipv6=False)
    for pod in (a, b):
        observed = ruleset.PodRuleset("x", pod.name, mode=ruleset.PolicyMode.VISIBILITY)
        commit(pod.netns, observed, backend)
    reader = ReaderProc()
    try:
        accepted_in, accepted_out = _connect_and_read(reader, a, b)
        assert [(p[1], p[2], p[3], p[5]) for p in accepted_in] == [(a.ipv4, b.ipv4, TCP, 80)]
        assert [(p[1], p[2], p[3], p[5]) for p in accepted_out] == [(a.ipv4, b.ipv4, TCP, 80)]
    finally:
        reader.close()
