"""The iptables renderer honours every PodRuleset field (pure): quarantine, node guard,
visibility mode, and drops that are logged (NFLOG, same group/prefix/rate as nftables) and
counted (per-rule counters parsed back from `iptables-save -c`)."""

from __future__ import annotations

import pytest

from agent.calc import intervals, ruleset
from agent.dataplane.ipt import render as render_ipt
from agent.dataplane.nft import render as render_nft

TCP, UDP = 6, 17
A = intervals.address_range
C = intervals.cidr_range
P = ruleset.PortRange
VIS = ruleset.PolicyMode.VISIBILITY


def rules(text: str, chain: str) -> list[str]:
    return [
        line[len(f"-A {chain} ") :] for line in text.splitlines() if line.startswith(f"-A {chain} ")
    ]


def isolated(*peers: ruleset.AddrRange) -> ruleset.DirectionRuleset:
    return ruleset.DirectionRuleset(True, peers, (), ("ns/p",))


def nflog(direction: str, reason: str, mode: str) -> str:
    return (
        "-m limit --limit 100/second --limit-burst 50 -j NFLOG --nflog-group 2100 "
        f'--nflog-prefix "podseg {direction} {reason} {mode}" --nflog-size 128 '
        "--nflog-threshold 16"
    )


def test_deny_rules_count_log_and_keep_the_silent_egress_drop() -> None:
    eg, ing = ruleset.Direction.EGRESS, ruleset.Direction.INGRESS
    assert render_ipt.deny_rules(eg, "node-guard", ["eth0", "eth1"]) == [
        '-m comment --comment "deny.egress.node-guard.enforce"',
        nflog("egress", "node-guard", "enforce"),
        "-o eth0 -j PODSEG-EGRESS-MARK",
        "-o eth1 -j PODSEG-EGRESS-MARK",
        "-j DROP",
    ]
    assert render_ipt.deny_rules(ing, "policy", ["eth0"])[-1] == "-j DROP"
    visible = render_ipt.deny_rules(eg, "policy", ["eth0"], mode=VIS)
    assert visible == [
        '-m comment --comment "deny.egress.policy.visibility"',
        nflog("egress", "policy", "visibility"),
        "-j ACCEPT",
    ]
    assert not any("MARK" in r or "DROP" in r for r in visible)
    # the prefix is the one the flow reader parses, the comment the one the collector parses
    assert render_nft.parse_log_prefix("podseg egress policy visibility") == (
        "egress",
        "policy",
        "visibility",
    )
    with pytest.raises(ValueError):
        render_ipt.deny_rules(eg, "bogus", [])


def test_log_rate_follows_render_nft(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_nft, "LOG_RATE", "7/minute burst 3 packets")
    assert render_ipt.log_limit() == "-m limit --limit 7/minute --limit-burst 3"


def test_quarantine_comes_first_in_both_directions_with_forensic_sources() -> None:
    rs = ruleset.PodRuleset(
        "x",
        "a",
        ingress=isolated(A("198.18.0.9")),
        quarantine=ruleset.Quarantine(allow_from=(C("198.18.5.0/24"), C("fd00:198:18:5::/64"))),
    )
    out = render_ipt.render(rs, ["eth0"])
    assert rules(out.v4, "PODSEG-INPUT")[1:3] == ["-i lo -j ACCEPT", "-j PODSEG-QUARANTINE-IN"]
    # before the established shortcut: a quarantined pod's open connections are cut too
    assert rules(out.v4, "PODSEG-INPUT")[3].startswith("-m conntrack --ctstate")
    assert rules(out.v4, "PODSEG-OUTPUT")[:3] == [
        "-o lo -j ACCEPT",
        "-j PODSEG-QUARANTINE-OUT",
        "-m conntrack --ctstate RELATED,ESTABLISHED -m connmark --mark 0x0/0x100000 -j ACCEPT",
    ]
    assert rules(out.v4, "PODSEG-QUARANTINE-IN") == [
        "-m set --match-set PODSEG-@GEN@-qa4 src -j ACCEPT",
        '-m comment --comment "deny.ingress.quarantine.enforce"',
        nflog("ingress", "quarantine", "enforce"),
        "-j DROP",
    ]
    assert rules(out.v6, "PODSEG-QUARANTINE-OUT") == [
        "-m conntrack --ctdir REPLY -m set --match-set PODSEG-@GEN@-qa6 dst -j ACCEPT",
        "-p ipv6-icmp -j PODSEG-ND-Q-OUT",
        '-m comment --comment "deny.egress.quarantine.enforce"',
        nflog("egress", "quarantine", "enforce"),
        "-o eth0 -j PODSEG-EGRESS-MARK",
        "-j DROP",
    ]
    assert "add PODSEG-@GEN@-qa4 198.18.5.0/24\n" in out.ipset
    assert "add PODSEG-@GEN@-qa6 fd00:198:18:5::/64\n" in out.ipset
    assert 'hook egress device "eth0"' in out.netdev  # egress not isolated, still dropped
    # quarantine alone (no policy) isolates too; visibility mode never weakens it
    alone = render_ipt.render(
        ruleset.PodRuleset("x", "a", mode=VIS, quarantine=ruleset.Quarantine()), ["eth0"]
    )
    assert rules(alone.v4, "PODSEG-QUARANTINE-IN")[-1] == "-j DROP"
    assert rules(alone.v4, "PODSEG-INPUT")[-1] == "-j PODSEG-QUARANTINE-IN"
    assert "ACCEPT" not in " ".join(rules(alone.v4, "PODSEG-QUARANTINE-OUT"))


def test_node_guard_blocks_before_policy_allows() -> None:
    guard = ruleset.NodeGuard(
        node_addrs=(A("198.18.0.1"), A("fd00:198:18::1")),
        ports=(
            ruleset.ProtoPorts(TCP, P(10250, 10250)),
            ruleset.ProtoPorts(UDP, P(0, 65535)),
        ),
        blocked=(A("198.18.200.200"),),
    )
    rs = ruleset.PodRuleset("x", "a", egress=isolated(intervals.ALL_V4), node_guard=guard)
    out = render_ipt.render(rs, ["eth0"])
    output = rules(out.v4, "PODSEG-OUTPUT")
    assert output.index("-j PODSEG-NODE-GUARD") < output.index(
        "-m set --match-set PODSEG-@GEN@-e4a dst -j PODSEG-EGRESS-ALLOW"
    )
    assert rules(out.v4, "PODSEG-NODE-GUARD") == [
        "-m set --match-set PODSEG-@GEN@-gb4 dst -j PODSEG-NODE-GUARD-DENY",
        "-p tcp -m tcp --dport 10250:10250 -m set --match-set PODSEG-@GEN@-gn4 dst "
        "-j PODSEG-NODE-GUARD-DENY",
        "-p udp -m set --match-set PODSEG-@GEN@-gn4 dst -j PODSEG-NODE-GUARD-DENY",
    ]
    assert rules(out.v6, "PODSEG-NODE-GUARD")[0].endswith(
        "PODSEG-@GEN@-gn6 dst -j PODSEG-NODE-GUARD-DENY"
    )
    assert rules(out.v4, "PODSEG-NODE-GUARD-DENY")[0] == (
        '-m comment --comment "deny.egress.node-guard.enforce"'
    )
    # guard without any policy: OUTPUT holds the guard and nothing that denies other traffic
    alone = render_ipt.render(ruleset.PodRuleset("x", "a", node_guard=guard), ["eth0"])
    assert rules(alone.v4, "PODSEG-OUTPUT")[-1] == "-j PODSEG-NODE-GUARD"
    assert rules(alone.v4, "PODSEG-EGRESS-DENY") == [] and rules(alone.v4, "PODSEG-INPUT")[1:] == []
    assert (
        alone.netdev
        and alone.fingerprint
        != render_ipt.render(ruleset.PodRuleset("x", "a"), ["eth0"]).fingerprint
    )


def test_visibility_mode_logs_and_accepts_policy_denials() -> None:
    rs = ruleset.PodRuleset("x", "a", ingress=isolated(), egress=isolated(), mode=VIS)
    out = render_ipt.render(rs, ["eth0"])
    assert rules(out.v4, "PODSEG-INPUT")[-2:] == [
        nflog("ingress", "policy", "visibility"),
        "-j ACCEPT",
    ]
    assert rules(out.v4, "PODSEG-EGRESS-DENY")[-1] == "-j ACCEPT"
    assert "-j DROP" not in out.v4 + out.v6
    enforce = render_ipt.render(
        ruleset.PodRuleset("x", "a", ingress=isolated(), egress=isolated()), ["eth0"]
    )
    assert enforce.fingerprint != out.fingerprint


def test_parse_counters_sums_rules_of_a_name_and_ignores_others() -> None:
    save = (
        '[0:0] -A PODSEG-INPUT -m comment --comment "podseg fp=0123456789abcdef pod=x/a"\n'
        "[5:300] -A PODSEG-INPUT -m comment --comment deny.ingress.policy.enforce\n"
        '[2:120] -A PODSEG-QUARANTINE-IN -m comment --comment "deny.ingress.quarantine.enforce"\n'
        "[9:9] -A PODSEG-INPUT -m limit --limit 100/sec -j NFLOG --nflog-prefix x\n"
        "[3:180] -A PODSEG-INPUT -m comment --comment deny.ingress.policy.enforce\n"
        "[4:1] -A OTHER -m comment --comment deny.ingress.policy.enforce\n"
    )
    assert render_ipt.parse_counters(save) == {
        "deny.ingress.policy.enforce": 8,
        "deny.ingress.quarantine.enforce": 2,
    }
