"""The iptables renderer (pure): sets, rules, fingerprint, jump fix-ups and delete scripts."""

from __future__ import annotations

import dataclasses

import pytest

from agent.calc import intervals, ruleset
from agent.dataplane import backends, protocol
from agent.dataplane.ipt import render as render_ipt
from agent.dataplane.nft import render as render_nft

TCP, UDP, SCTP = 6, 17, 132
P = ruleset.PortRange
A = intervals.address_range
C = intervals.cidr_range


def isolated(
    any_port: tuple[ruleset.AddrRange, ...] = (),
    ports: tuple[ruleset.PeerPort, ...] = (),
) -> ruleset.DirectionRuleset:
    return ruleset.DirectionRuleset(True, any_port, ports, ("ns/p",))


def rules(text: str, chain: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"-A {chain} ")]


def test_not_isolated_renders_owner_rule_and_no_sets() -> None:
    out = render_ipt.render(ruleset.PodRuleset("x", "a"), ["eth0"])
    assert out.ipset == "" and out.netdev == ""
    for script in (out.v4, out.v6):
        assert rules(script, "PODSEG-INPUT") == [
            f'-A PODSEG-INPUT -m comment --comment "podseg fp={out.fingerprint} pod=x/a"'
        ]
        assert rules(script, "PODSEG-OUTPUT") == []
        assert script.startswith("*filter\n:PODSEG-INPUT - [0:0]\n") and script.endswith("COMMIT\n")
    assert render_ipt.parse_fingerprint(out.v4) == out.fingerprint
    assert render_ipt.parse_comment(out.v6) == f"podseg fp={out.fingerprint} pod=x/a"


def test_peers_go_to_sets_by_kind_and_rule_count_is_flat() -> None:
    def rs(n: int) -> ruleset.PodRuleset:
        peers = tuple(
            ruleset.PeerPort(A(f"198.18.{i // 200}.{i % 200 + 1}"), TCP, P(80, 81))
            for i in range(n)
        )
        return ruleset.PodRuleset("x", "a", ingress=isolated(ports=peers))

    small, large = render_ipt.render(rs(10), []), render_ipt.render(rs(2000), [])
    assert len(rules(small.v4, "PODSEG-INPUT")) == len(rules(large.v4, "PODSEG-INPUT"))
    peer_adds = [
        line for line in large.ipset.splitlines() if line.startswith("add ") and "-i4" in line
    ]
    assert len(peer_adds) == 2000 * 2  # two ports each (80-81 is expanded)
    assert (
        "create PODSEG-@GEN@-i4p hash:net,port family inet hashsize 4096 maxelem 65536"
        in large.ipset
    )
    assert "create PODSEG-@GEN@-i4p hash:net,port family inet hashsize 1024 " in small.ipset
    assert "add PODSEG-@GEN@-i4p 198.18.0.1/32,tcp:81" in large.ipset
    assert (
        "-A PODSEG-INPUT -m set --match-set PODSEG-@GEN@-i4p src,dst -j PODSEG-INGRESS-ALLOW"
        in large.v4
    )


def test_long_port_ranges_become_one_rule_per_range_not_per_peer() -> None:
    rs = ruleset.PodRuleset(
        "x",
        "a",
        egress=isolated(
            ports=(
                ruleset.PeerPort(A("198.18.0.1"), TCP, P(1000, 2000)),
                ruleset.PeerPort(A("198.18.0.2"), TCP, P(1000, 2000)),
                ruleset.PeerPort(A("198.18.0.3"), UDP, P(0, 65535)),
                ruleset.PeerPort(A("198.18.0.4"), SCTP, P(5000, 5001)),
            )
        ),
    )
    out = render_ipt.render(rs, ["eth0"])
    assert rules(out.v4, "PODSEG-OUTPUT")[2:5] == [
        "-A PODSEG-OUTPUT -m set --match-set PODSEG-@GEN@-e4p dst,dst -j PODSEG-EGRESS-ALLOW",
        "-A PODSEG-OUTPUT -p tcp -m tcp --dport 1000:2000 -m set --match-set PODSEG-@GEN@-e4r0"
        " dst -j PODSEG-EGRESS-ALLOW",
        "-A PODSEG-OUTPUT -p udp -m set --match-set PODSEG-@GEN@-e4r1 dst -j PODSEG-EGRESS-ALLOW",
    ]
    assert "add PODSEG-@GEN@-e4r0 198.18.0.1/32\nadd PODSEG-@GEN@-e4r0 198.18.0.2/32" in (out.ipset)
    assert "add PODSEG-@GEN@-e4p 198.18.0.4/32,sctp:5001" in out.ipset


def test_address_ranges_are_split_into_cidrs_and_slash_zero_into_halves() -> None:
    assert render_ipt.cidrs(ruleset.AddrRange(4, A("198.18.0.1").first, A("198.18.0.6").first)) == [
        "198.18.0.1/32",
        "198.18.0.2/31",
        "198.18.0.4/31",
        "198.18.0.6/32",
    ]
    assert render_ipt.cidrs(intervals.ALL_V4) == ["0.0.0.0/1", "128.0.0.0/1"]
    assert render_ipt.cidrs(intervals.ALL_V6) == ["::/1", "8000::/1"]


def test_ingress_and_egress_guards_and_silent_egress_drop() -> None:
    rs = ruleset.PodRuleset(
        "x", "a", ingress=isolated(any_port=(C("fd00:198:18::/64"),)), egress=isolated()
    )
    out = render_ipt.render(rs, ["eth0"])
    v6_input = rules(out.v6, "PODSEG-INPUT")
    assert v6_input[1:] == [
        "-A PODSEG-INPUT -i lo -j ACCEPT",
        "-A PODSEG-INPUT -m conntrack --ctstate RELATED,ESTABLISHED -m connmark --mark "
        "0x0/0x100000 -j ACCEPT",
        "-A PODSEG-INPUT -p ipv6-icmp -j PODSEG-ND-IN",
        "-A PODSEG-INPUT -m set --match-set PODSEG-@GEN@-i6a src -j PODSEG-INGRESS-ALLOW",
        '-A PODSEG-INPUT -m comment --comment "deny.ingress.policy.enforce"',
        "-A PODSEG-INPUT -m limit --limit 100/second --limit-burst 50 -j NFLOG --nflog-group "
        '2100 --nflog-prefix "podseg ingress policy enforce" --nflog-size 128 '
        "--nflog-threshold 16",
        "-A PODSEG-INPUT -j DROP",
    ]
    # Every accept of a policy samples new connections to NFLOG, rate limited, then accepts.
    sample = (
        "-m conntrack --ctstate NEW -m limit --limit 20/second --limit-burst 20 -j NFLOG "
        '--nflog-group 2100 --nflog-prefix "podseg accept {}" --nflog-size 128 '
        "--nflog-threshold 16"
    )
    assert rules(out.v6, "PODSEG-INGRESS-ALLOW") == [
        "-A PODSEG-INGRESS-ALLOW " + sample.format("ingress"),
        "-A PODSEG-INGRESS-ALLOW -j ACCEPT",
    ]
    assert rules(out.v4, "PODSEG-EGRESS-ALLOW") == [
        "-A PODSEG-EGRESS-ALLOW " + sample.format("egress"),
        "-A PODSEG-EGRESS-ALLOW -j PODSEG-EGRESS-ACCEPT",
    ]
    assert rules(out.v4, "PODSEG-EGRESS-ACCEPT") == [
        "-A PODSEG-EGRESS-ACCEPT -j CONNMARK --and-mark 0xffefffff",
        "-A PODSEG-EGRESS-ACCEPT -j ACCEPT",
    ]
    assert all(
        line.endswith("-j PODSEG-EGRESS-ALLOW")
        for line in rules(out.v4, "PODSEG-OUTPUT")
        if "--match-set" in line
    )
    # Egress denial marks (packet + conntrack) and accepts; the netdev hook drops it later.
    assert rules(out.v4, "PODSEG-OUTPUT")[-1] == "-A PODSEG-OUTPUT -j PODSEG-EGRESS-DENY"
    assert rules(out.v4, "PODSEG-EGRESS-DENY")[2:] == [
        "-A PODSEG-EGRESS-DENY -o eth0 -j PODSEG-EGRESS-MARK",
        "-A PODSEG-EGRESS-DENY -j DROP",
    ]
    assert rules(out.v4, "PODSEG-EGRESS-MARK") == [
        "-A PODSEG-EGRESS-MARK -j MARK --or-mark 0x100000",
        "-A PODSEG-EGRESS-MARK -j CONNMARK --or-mark 0x100000",
        "-A PODSEG-EGRESS-MARK -j ACCEPT",
    ]
    assert 'hook egress device "eth0"' in out.netdev and "table inet" not in out.netdev
    # Without an interface nothing could drop a marked packet: fail closed with DROP.
    bare = render_ipt.render(rs, [])
    assert rules(bare.v4, "PODSEG-EGRESS-DENY")[2:] == ["-A PODSEG-EGRESS-DENY -j DROP"]
    assert bare.netdev == ""


def test_fingerprint_is_deterministic_and_covers_content() -> None:
    rs = ruleset.PodRuleset("x", "a", ingress=isolated(any_port=(A("198.18.0.1"),)))
    one, two = render_ipt.render(rs, ["eth0"]), render_ipt.render(rs, ["eth0"])
    assert one == two
    other = dataclasses.replace(rs, ingress=isolated(any_port=(A("198.18.0.2"),)))
    assert render_ipt.render(other, ["eth0"]).fingerprint != one.fingerprint
    assert render_ipt.render(rs, ["eth1"]).fingerprint == one.fingerprint  # no egress hook
    egress = dataclasses.replace(rs, egress=isolated())
    assert (
        render_ipt.render(egress, ["eth0"]).fingerprint
        != render_ipt.render(egress, ["eth1"]).fingerprint
    )
    with pytest.raises(ValueError):
        render_ipt.render(rs, ["bad name"])


SAVE = """# Generated by iptables-save
*filter
:INPUT ACCEPT [10:200]
:OUTPUT ACCEPT [0:0]
:FOREIGN - [0:0]
:PODSEG-INPUT - [0:0]
:PODSEG-OLD - [0:0]
-A INPUT -j FOREIGN
-A INPUT -j PODSEG-INPUT
-A OUTPUT -j PODSEG-OUTPUT
-A PODSEG-INPUT -m comment --comment "podseg fp=0123456789abcdef pod=x/a"
-A PODSEG-INPUT -m set --match-set PODSEG-aa11bb-i4a src -j ACCEPT
COMMIT
"""


def test_compose_replaces_jumps_removes_unknown_owned_chains_and_sets_generation() -> None:
    rs = ruleset.PodRuleset("x", "a", ingress=isolated(any_port=(A("198.18.0.1"),)))
    body = render_ipt.render(rs, []).v4
    script = render_ipt.compose(body, SAVE, "cc22dd")
    lines = script.splitlines()
    declared = 1 + len(render_ipt.CHAINS)
    assert lines[declared : declared + 6] == [
        "-D INPUT -j PODSEG-INPUT",
        "-D OUTPUT -j PODSEG-OUTPUT",
        "-F PODSEG-OLD",
        "-X PODSEG-OLD",
        "-I INPUT 1 -j PODSEG-INPUT",
        "-I OUTPUT 1 -j PODSEG-OUTPUT",
    ]
    assert "FOREIGN" not in script
    assert render_ipt.GEN not in script and "PODSEG-cc22dd-i4a" in script
    assert render_ipt.compose(body, "", "x").count("-D ") == 0


def test_delete_script_and_parsers_read_a_save() -> None:
    script = render_ipt.delete_script(SAVE)
    assert script is not None
    assert script.splitlines() == [
        "*filter",
        "-D INPUT -j PODSEG-INPUT",
        "-D OUTPUT -j PODSEG-OUTPUT",
        "-F PODSEG-INPUT",
        "-F PODSEG-OLD",
        "-X PODSEG-INPUT",
        "-X PODSEG-OLD",
        "COMMIT",
    ]
    assert render_ipt.delete_script("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j FOREIGN\n") is None
    assert render_ipt.parse_fingerprint(SAVE) == "0123456789abcdef"
    assert render_ipt.parse_comment(SAVE) == "podseg fp=0123456789abcdef pod=x/a"
    assert render_ipt.referenced_sets(SAVE) == ["PODSEG-aa11bb-i4a"]
    assert render_ipt.owned_lines(SAVE)[2:4] == ["-A INPUT -j FOREIGN", "-A INPUT -j PODSEG-INPUT"]
    assert ":INPUT ACCEPT [10:200]" not in render_ipt.owned_lines(SAVE)  # counters excluded


def test_set_headers_split_a_terse_listing_by_set() -> None:
    terse = (
        "Name: PODSEG-a-i4a\nType: hash:net\nNumber of entries: 2\n"
        "Name: foreign\nType: hash:ip\nNumber of entries: 0\n"
    )
    assert render_ipt.set_headers(terse) == {
        "PODSEG-a-i4a": "Type: hash:net\nNumber of entries: 2\n",
        "foreign": "Type: hash:ip\nNumber of entries: 0\n",
    }


def test_backend_choice_and_programs_carry_the_renderers_fingerprints() -> None:
    rs = ruleset.PodRuleset("x", "a", ingress=isolated(any_port=(A("198.18.0.1"),)))
    ipt, nft = backends.get("iptables"), backends.get("nftables")
    assert ipt.render(rs, ["eth0"]).fingerprint == render_ipt.render(rs, ["eth0"]).fingerprint
    assert nft.render(rs, ["eth0"]).fingerprint == render_nft.render(rs, ["eth0"]).fingerprint
    assert isinstance(ipt.render(rs, ["eth0"]).payload, protocol.IptProgram)
    assert isinstance(nft.render(rs, ["eth0"]).payload, render_nft.Rendered)
    with pytest.raises(ValueError):
        backends.get("ebpf")
