"""The iptables backend against the real kernel, through the real dataplane worker process.

Root only. Namespaces are `psg-<random6>-render` (+ a peer), deleted by their fixtures; the
root namespace's firewall is never touched (the worker refuses to enter it). Live UDP/TCP
probes check what the rules do, not only what they look like.
"""

from __future__ import annotations

import pytest

from agent.calc import intervals, ruleset
from agent.dataplane import backends, protocol
from agent.dataplane import client as dp_client
from agent.dataplane.ipt import render as render_ipt
from agent.dataplane.nft import render as render_nft
from tests.support import dataplane as dpt
from tests.support import privilege
from tests.support.kernel import IPT, TCP, UDP, P, run, target, udp_exchange, v4, v6, with_worker
from tests.support.kernel import apply_iptables as apply

pytestmark = [
    pytest.mark.skipif(not privilege.has("ipset"), reason="needs ipset (scripts/setup.sh)"),
    pytest.mark.skipif(
        not privilege.has("iptables-restore"), reason="needs iptables (scripts/setup.sh)"
    ),
]


def inspect(ns: str) -> tuple[str | None, str | None]:
    return with_worker(lambda client: dpt.examine(client, IPT, target(ns)))


def ipsets(ns: str) -> list[str]:
    return run("ip", "netns", "exec", ns, "ipset", "list", "-n").split()


def save(ns: str, family: int = 4) -> str:
    tool = "iptables-save" if family == 4 else "ip6tables-save"
    return run("ip", "netns", "exec", ns, tool, "-t", "filter")


def nft_tables(ns: str) -> set[str]:
    out = run("ip", "netns", "exec", ns, "nft", "list", "tables")
    return {line.removeprefix("table ").strip() for line in out.splitlines() if line.strip()}


def both_ways(peer: ruleset.AddrRange, ingress_port: int, egress_port: int) -> ruleset.PodRuleset:
    return ruleset.PodRuleset(
        "prod",
        "web",
        ingress=ruleset.DirectionRuleset(
            isolated=True,
            port_peers=(ruleset.PeerPort(peer, TCP, P(ingress_port, ingress_port)),),
            policies=("a/b",),
        ),
        egress=ruleset.DirectionRuleset(
            isolated=True,
            port_peers=(ruleset.PeerPort(peer, UDP, P(egress_port, egress_port)),),
            policies=("a/b",),
        ),
    )


def test_denials_are_silent_and_denied_flows_open_no_reply_path(
    pod_and_peer: tuple[str, str],
) -> None:
    pod, peer = pod_and_peer
    apply(pod, both_ways(v4(20), 80, 53))
    # Allowed egress reaches the peer.
    assert udp_exchange(pod, peer, "198.18.0.20", 53, 40001) == ("sent", "got hi 40001")
    # Denied egress: send() succeeds (no EPERM from OUTPUT), the datagram never arrives.
    assert udp_exchange(pod, peer, "198.18.0.20", 9999, 40002) == ("sent", "timeout")
    # The denied flow's conntrack entry (CONNMARK) must not admit the peer's "reply".
    assert udp_exchange(peer, pod, "198.18.0.10", 40002, 9999) == ("sent", "timeout")
    # Plain denied ingress (UDP 80: only TCP 80 is allowed).
    assert udp_exchange(peer, pod, "198.18.0.10", 80, 40003) == ("sent", "timeout")
    # The iptables backend never uses the nftables decision table; only the egress drop.
    assert "inet podseg" not in nft_tables(pod)
    assert "netdev podseg" in nft_tables(pod)
    # Removing everything restores traffic (the setup itself works).
    with_worker(lambda client: backends.delete(client, IPT, target(pod)))
    assert udp_exchange(peer, pod, "198.18.0.10", 80, 40004) == ("sent", "got hi 40004")
    assert udp_exchange(pod, peer, "198.18.0.20", 9999, 40005) == ("sent", "got hi 40005")


def test_port_ranges_any_port_peers_and_cidrs_live(
    pod_and_peer: tuple[str, str],
) -> None:
    pod, peer = pod_and_peer
    peer_net = intervals.cidr_range("198.18.0.16/29")  # holds the peer, .20
    rs = ruleset.PodRuleset(
        "prod",
        "web",
        ingress=ruleset.DirectionRuleset(
            isolated=True,
            port_peers=(
                ruleset.PeerPort(peer_net, UDP, P(1000, 1003)),  # expanded: hash:net,port
                ruleset.PeerPort(peer_net, UDP, P(2000, 2999)),  # long range: hash:net + dport
                ruleset.PeerPort(v4(99), UDP, P(7000, 7000)),  # another peer only
            ),
            policies=("a/b",),
        ),
    )
    apply(pod, rs)
    verdicts = {
        port: udp_exchange(peer, pod, "198.18.0.10", port, 41000 + i, timeout=0.6)[1]
        for i, port in enumerate((999, 1000, 1003, 1004, 2000, 2500, 2999, 3000, 7000))
    }
    allowed = {1000, 1003, 2000, 2500, 2999}
    assert {p for p, got in verdicts.items() if got.startswith("got")} == allowed
    # Any-port peer: the whole /16 except nothing; now every port passes.
    any_port = ruleset.PodRuleset(
        "prod",
        "web",
        ingress=ruleset.DirectionRuleset(
            isolated=True, any_port_peers=(intervals.cidr_range("0.0.0.0/0"),), policies=("a/c",)
        ),
    )
    apply(pod, any_port)
    assert udp_exchange(peer, pod, "198.18.0.10", 999, 41100)[1] == "got hi 41100"


def test_reapply_switches_generation_atomically_and_cleans_up(netns: str) -> None:
    first = both_ways(v4(20), 80, 53)
    fp1, digest1 = apply(netns, first)
    sets1 = ipsets(netns)
    assert sets1 and all(s.startswith("PODSEG-") for s in sets1)
    # Same ruleset again: same fingerprint; a new generation replaces the old sets.
    fp1b, _ = apply(netns, first)
    assert fp1b == fp1
    assert not set(sets1) & set(ipsets(netns))
    second = both_ways(v4(21), 81, 54)
    fp2, digest2 = apply(netns, second)
    assert fp2 != fp1 and digest2 != digest1
    for family in (4, 6):
        text = save(netns, family)
        # One jump per built-in chain, first; the owner comment carries the fingerprint.
        assert text.count("-j PODSEG-INPUT") == 1 and text.count("-j PODSEG-OUTPUT") == 1
        assert render_ipt.parse_fingerprint(text) == fp2
        assert "pod=prod/web" in (render_ipt.parse_comment(text) or "")
    referenced = render_ipt.referenced_sets(save(netns, 4) + save(netns, 6))
    assert sorted(ipsets(netns)) == referenced  # nothing of the old generations is left
    # Not isolated any more: chains stay (owner comment) but hold no policy, no netdev drop.
    fp3, _ = apply(netns, ruleset.PodRuleset("prod", "web"))
    assert ipsets(netns) == [] and "netdev podseg" not in nft_tables(netns)
    assert render_ipt.parse_fingerprint(save(netns)) == fp3


def test_drift_in_rules_sets_or_jump_order_changes_the_digest(netns: str) -> None:
    rs = both_ways(v4(20), 80, 53)
    fp, digest = apply(netns, rs)
    name = next(s for s in ipsets(netns) if s.endswith("-i4p"))
    run("ip", "netns", "exec", netns, "ipset", "add", name, "198.18.0.99,tcp:22")
    fp_now, digest_now = inspect(netns)
    assert fp_now == fp and digest_now != digest  # an extra element: drift, same comment
    apply(netns, rs)
    _, digest = inspect(netns)
    run("ip", "netns", "exec", netns, "iptables", "-I", "INPUT", "1", "-j", "ACCEPT")
    assert inspect(netns)[1] != digest  # a foreign rule before our jump could bypass us
    run("ip", "netns", "exec", netns, "iptables", "-D", "INPUT", "-j", "ACCEPT")
    run("ip", "netns", "exec", netns, "ip6tables", "-F", "PODSEG-INPUT")
    assert inspect(netns)[0] is None  # one family lost its owner rule: unknown, re-apply


def test_delete_is_idempotent_and_spares_foreign_rules_and_sets(netns: str) -> None:
    run("ip", "netns", "exec", netns, "iptables", "-N", "FOREIGN")
    run("ip", "netns", "exec", netns, "iptables", "-A", "INPUT", "-j", "FOREIGN")
    run("ip", "netns", "exec", netns, "ipset", "create", "foreign", "hash:ip")
    apply(netns, both_ways(v4(20), 80, 53))

    async def delete_twice(client: dp_client.WorkerClient) -> tuple[object, object]:
        request = protocol.IptDelete(target(netns).path, target(netns).ino)
        first, second = await client.call(request), await client.call(request)
        return first.removed, second.removed

    assert with_worker(delete_twice) == (True, False)
    assert "PODSEG" not in save(netns, 4) + save(netns, 6)
    assert "-A INPUT -j FOREIGN" in save(netns, 4)
    assert ipsets(netns) == ["foreign"]
    assert "netdev podseg" not in nft_tables(netns)
    assert inspect(netns) == (None, None)


def test_nftables_and_iptables_backends_ignore_each_other(netns: str) -> None:
    rs = both_ways(v6(20), 80, 53)
    apply(netns, rs)  # iptables-nft keeps its rules in nftables tables `ip filter`/`ip6 filter`
    nft = backends.Nftables()

    async def nft_side(client: dp_client.WorkerClient) -> tuple[object, ...]:
        t = target(netns)
        seen = await dpt.examine(client, nft, t), await dpt.comment(client, nft, t)
        await backends.delete(client, nft, t)  # the nftables backend's delete leaves iptables alone
        return seen

    assert with_worker(nft_side) == ((None, None), None)
    assert render_ipt.parse_fingerprint(save(netns, 6)) is not None
    with_worker(lambda client: backends.delete(client, IPT, target(netns)))
    program = nft.render(rs, ["eth0"])
    with_worker(lambda client: backends.commit(client, nft, target(netns), program))
    assert inspect(netns) == (None, None)  # and the iptables side ignores nftables tables
    assert "inet podseg" in nft_tables(netns)
    assert (
        render_nft.parse_fingerprint(
            run("ip", "netns", "exec", netns, "nft", "list", "table", "inet", "podseg")
        )
        == program.fingerprint
    )


def test_sctp_and_ipv6_ranges_load_at_the_ruleset_level(netns: str) -> None:
    """The SCTP module is absent here, so SCTP is checked as loaded rules and set elements."""
    sctp = 132
    rs = ruleset.PodRuleset(
        "prod",
        "web",
        ingress=ruleset.DirectionRuleset(
            isolated=True,
            port_peers=(
                ruleset.PeerPort(v4(20), sctp, P(5000, 6000)),
                ruleset.PeerPort(v6(20), sctp, P(7000, 7001)),
            ),
            policies=("a/b",),
        ),
    )
    apply(netns, rs)
    v4_rules, v6_rules = save(netns, 4), save(netns, 6)
    assert "-p sctp -m sctp --dport 5000:6000 -m set --match-set PODSEG-" in v4_rules
    name = next(s for s in ipsets(netns) if s.endswith("-i6p"))
    members = run("ip", "netns", "exec", netns, "ipset", "list", name)
    assert "sctp:7000" in members and "sctp:7001" in members
    assert f"--match-set {name} src,dst -j PODSEG-INGRESS-ALLOW" in v6_rules
