"""Foreign base chains against the real kernel. A pod with NET_ADMIN can hook a chain of its own
that clears podseg's deny mark after the output chain decided: denied egress then leaves,
though podseg's tables are untouched. The worker's read-backs report such chains; rendered
without device hooks (what the agent commits while they are there), the same ruleset drops
denied egress in the output hook, and the mark-clearing chain changes nothing."""

from __future__ import annotations

import shutil

import pytest

from agent.calc import ruleset
from agent.dataplane import protocol
from agent.dataplane.nft import render as render_nft
from tests.support.kernel import (
    IPT,
    TCP,
    UDP,
    P,
    apply_iptables,
    load,
    target,
    udp_exchange,
    v4,
    with_worker,
)

CLEAR_MARK = f"meta mark set meta mark & 0x{0xFFFFFFFF & ~render_nft.DENY_MARK:08x}"
MARK_CLEARER = f"""table inet evil {{
  chain post {{
    type filter hook postrouting priority 0; policy accept;
    {CLEAR_MARK}
  }}
}}
"""
EARLY = """table inet early {
  chain out {
    type filter hook output priority -10; policy accept;
  }
}
"""


def egress_isolated() -> ruleset.PodRuleset:
    return ruleset.PodRuleset(
        "prod",
        "web",
        egress=ruleset.DirectionRuleset(
            isolated=True,
            port_peers=(ruleset.PeerPort(v4(20), UDP, P(53, 53)),),
            policies=("prod/dns-only",),
        ),
    )


def test_a_mark_clearing_chain_is_reported_and_the_output_drop_withstands_it(
    pod_and_peer: tuple[str, str],
) -> None:
    pod, peer = pod_and_peer
    rs = egress_isolated()
    load(pod, render_nft.render(rs, ["eth0"]).script)
    assert udp_exchange(pod, peer, "198.18.0.20", 9999, 41001) == ("sent", "timeout")
    load(pod, MARK_CLEARER + EARLY)
    # The attack: podseg's tables untouched, its denied egress leaves.
    assert udp_exchange(pod, peer, "198.18.0.20", 9999, 41002) == ("sent", "got hi 41002")

    def read(request: type[protocol.Inspect] | type[protocol.Glance]) -> protocol.Examined:
        async def go(client: protocol.Dataplane) -> protocol.Examined:
            found = target(pod)
            return await client.call(request(found.path, found.ino))

        return with_worker(go)

    for request in (protocol.Inspect, protocol.Glance):
        found = read(request)
        assert found.foreign == ("inet evil post: filter hook postrouting priority 0",)
        assert found.fingerprint == render_nft.render(rs, ["eth0"]).fingerprint
    # Without device hooks the denial is a drop in the output hook: the sender sees EPERM,
    # and the mark-clearing chain, which runs later, never sees the packet.
    load(pod, render_nft.render(rs, []).script)
    assert udp_exchange(pod, peer, "198.18.0.20", 9999, 41003) == ("error 1", "timeout")
    assert udp_exchange(pod, peer, "198.18.0.20", 53, 41004) == ("sent", "got hi 41004")


def test_the_iptables_backend_reports_foreign_hooks_but_not_its_own_chains(
    pod_and_peer: tuple[str, str],
) -> None:
    if not all(shutil.which(t) for t in ("iptables-restore", "ip6tables-restore", "ipset")):
        pytest.skip("needs iptables-restore, ip6tables-restore and ipset (scripts/setup.sh)")
    pod, _peer = pod_and_peer
    rs = ruleset.PodRuleset(
        "prod",
        "web",
        ingress=ruleset.DirectionRuleset(
            isolated=True, port_peers=(ruleset.PeerPort(v4(20), TCP, P(80, 80)),)
        ),
        egress=egress_isolated().egress,
    )
    apply_iptables(pod, rs)

    async def go(client: protocol.Dataplane) -> protocol.Examined:
        return await client.call(IPT.examine_request(target(pod)))

    assert with_worker(go).foreign == ()
    load(pod, MARK_CLEARER)
    assert with_worker(go).foreign == ("inet evil post: filter hook postrouting priority 0",)
