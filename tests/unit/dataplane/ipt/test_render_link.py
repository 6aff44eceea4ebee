"""The iptables backend's twins of the link-scoped rules: anti-spoofing is the very netdev table
of the nftables backend, neighbour discovery is limited to the link (and to the gateway in
quarantine) with the same addresses, and a link-local gateway is guarded on its interface."""

from __future__ import annotations

from agent.calc import containment, intervals, ruleset
from agent.dataplane.ipt import render as render_ipt
from agent.dataplane.nft import render as render_nft

A = intervals.address_range
LINK = containment.link(
    ["fe80::1:5"],
    [
        ("::/0", "fe80::1", "eth0"),
        ("fd00:198:18:1::/64", None, "eth0"),
        ("0.0.0.0/0", "198.18.0.1", "eth0"),
    ],
)
SPOOF = ruleset.AntiSpoof(own=(A("198.18.1.5"), A("fd00:198:18:1::5")), link_local=LINK.link_local)
ISOLATED = ruleset.DirectionRuleset(isolated=True, policies=("ns/deny",))


def rules(text: str, chain: str) -> list[str]:
    return [
        line[len(f"-A {chain} ") :] for line in text.splitlines() if line.startswith(f"-A {chain} ")
    ]


def adds(ipset: str, name: str) -> list[str]:
    prefix = f"add {render_ipt.PREFIX}{render_ipt.GEN}-{name} "
    return [line[len(prefix) :] for line in ipset.splitlines() if line.startswith(prefix)]


def test_anti_spoofing_is_the_nftables_netdev_table() -> None:
    for rs in (
        ruleset.PodRuleset("ns", "p", anti_spoof=SPOOF, link=LINK),
        ruleset.PodRuleset("ns", "p", egress=ISOLATED, anti_spoof=SPOOF),
    ):
        out = render_ipt.render(rs, ["eth0"])
        netdev = "".join(render_nft.netdev_table(rs, ["eth0"]))
        assert netdev and out.netdev.endswith(netdev)
        assert "jump anti_spoof" in out.netdev
    assert render_ipt.render(ruleset.PodRuleset("ns", "p"), ["eth0"]).netdev == ""


def test_neighbour_discovery_chains_use_the_link_scope_addresses() -> None:
    rs = ruleset.PodRuleset("ns", "p", ingress=ISOLATED, egress=ISOLATED, link=LINK)
    out = render_ipt.render(rs, ["eth0"])
    expected = [c for r in render_nft.nd_link_addresses(LINK) for c in render_ipt.cidrs(r)]
    assert adds(out.ipset, "nl6") == expected
    assert "fd00:198:18:1::/64" in expected and "fe80::/10" in expected
    assert "-p ipv6-icmp -j PODSEG-ND-IN" in rules(out.v6, "PODSEG-INPUT")
    assert "-p ipv6-icmp -j PODSEG-ND-OUT" in rules(out.v6, "PODSEG-OUTPUT")
    nd_out = rules(out.v6, "PODSEG-ND-OUT")
    hop255 = [r for r in nd_out if "--hl-eq 255" in r]
    assert [r.split("--icmpv6-type ")[1].split()[0] for r in hop255] == ["133", "135", "136"]
    assert all("--match-set PODSEG-@GEN@-nl6 dst" in r for r in hop255)
    assert all("-d ff02::/16" in r for r in nd_out if "--hl-eq 1" in r)
    assert "134" not in " ".join(hop255)  # no router advertisement from a pod
    nd_in = rules(out.v6, "PODSEG-ND-IN")
    assert all("--match-set PODSEG-@GEN@-nl6 src" in r for r in nd_in if "--hl-eq 255" in r)
    assert rules(out.v4, "PODSEG-ND-IN") == [] and "nl6" not in out.v4


def test_quarantine_neighbour_discovery_is_the_gateway_only() -> None:
    rs = ruleset.PodRuleset("ns", "p", quarantine=ruleset.Quarantine(), link=LINK)
    out = render_ipt.render(rs, ["eth0"])
    assert adds(out.ipset, "ng6") == ["fe80::1/128", "ff02::1:ff00:1/128"]
    assert "-p ipv6-icmp -j PODSEG-ND-Q-OUT" in rules(out.v6, "PODSEG-QUARANTINE-OUT")
    assert rules(out.v6, "PODSEG-ND-Q-OUT") == [
        "-p ipv6-icmp -m icmp6 --icmpv6-type 135 -m hl --hl-eq 255 "
        "-m set --match-set PODSEG-@GEN@-ng6 dst -j ACCEPT",
        "-p ipv6-icmp -m icmp6 --icmpv6-type 136 -m hl --hl-eq 255 "
        "-m set --match-set PODSEG-@GEN@-ng6 dst -j ACCEPT",
        "-p ipv6-icmp -m icmp6 --icmpv6-type 136 -m hl --hl-eq 255 -d fe80::/10 -j ACCEPT",
    ]
    assert rules(out.v6, "PODSEG-ND-OUT") == []  # no policy isolation: no link-wide chain


def test_a_link_local_gateway_is_guarded_on_its_interface() -> None:
    guard = containment.node_guard(None, [], containment.parse_ports("tcp:22"), link=LINK)
    out = render_ipt.render(ruleset.PodRuleset("ns", "p", node_guard=guard), ["eth0"])
    assert "create PODSEG-@GEN@-gs6 hash:net,iface family inet6 " in out.ipset
    assert adds(out.ipset, "gs6") == ["fe80::1/128,eth0"]
    assert (
        "-p tcp -m tcp --dport 22:22 -m set --match-set PODSEG-@GEN@-gs6 dst,dst "
        "-j PODSEG-NODE-GUARD-DENY" in rules(out.v6, "PODSEG-NODE-GUARD")
    )
    assert "gs6" not in out.v4
    assert adds(out.ipset, "gb6") == ["fd00:ec2::254/128"]
