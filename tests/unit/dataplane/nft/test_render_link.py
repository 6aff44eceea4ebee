"""What the renderer makes of the link-scoped parts of a ruleset: anti-spoofing in the device
egress hook (always-declared sets, a drop reason of its own), neighbour discovery limited to the
link (and, in quarantine, to the gateway), and link-local gateways guarded on their interface."""

from __future__ import annotations

from agent.calc import containment, intervals, ruleset
from agent.dataplane.nft import incremental
from agent.dataplane.nft import render as render_nft

A = intervals.address_range
LINK = containment.link(
    ["fe80::1:5"],
    [
        ("::/0", "fd00:198:18:1::1", "eth0"),
        ("fd00:198:18:1::1/128", None, "eth0"),
        ("0.0.0.0/0", "198.18.0.1", "eth0"),
        ("fd00:198:18:9::/64", "fe80::1", "eth0"),
    ],
)
SPOOF = ruleset.AntiSpoof(own=(A("198.18.1.5"), A("fd00:198:18:1::5")), link_local=LINK.link_local)
ISOLATED = ruleset.DirectionRuleset(isolated=True, policies=("ns/deny",))


def _chain(script: str, name: str) -> list[str]:
    body = script.split(f"  chain {name} {{\n")[1].split("\n  }\n")[0]
    return [line.strip() for line in body.splitlines()]


def _table(script: str, family: str) -> str:
    return script.split(f"table {family} podseg {{\n")[1].split("\n}\n")[0]


def test_anti_spoofing_checks_every_frame_leaving_each_interface() -> None:
    rs = ruleset.PodRuleset("ns", "p", anti_spoof=SPOOF, link=LINK)
    script = render_nft.render(rs, ["eth0", "net1"]).script
    netdev = _table(script, "netdev")
    for chain in ("egress_eth0", "egress_net1"):  # no egress isolation: no mark to drop
        assert _chain(script, chain)[1:] == ["jump anti_spoof"]
    rules = _chain(script, "anti_spoof")
    # the EtherType must agree with the protocol the socket claims, both ways, for every frame,
    # in rules of their own (a listing would hide one of the two in front of an address match)
    agree = [
        f"{a} {proto} {b} != {proto} jump anti_spoof_deny"
        for proto in ("ip", "ip6", "arp")
        for a, b in (("meta protocol", "ether type"), ("ether type", "meta protocol"))
    ]
    assert rules[: len(agree)] == agree
    assert rules[len(agree)].startswith("icmpv6 type nd-neighbor-advert @th,64,128 != ")
    assert rules[-1] == "jump anti_spoof_deny"
    assert all("return" in r for r in rules[len(agree) + 1 : -1])
    assert _chain(script, "anti_spoof_deny") == render_nft.deny_rules(
        ruleset.Direction.EGRESS, "spoofed", ()
    )
    assert 'counter name "deny.egress.spoofed.enforce" drop' in netdev  # dropped here, no mark
    assert "198.18.1.5" in netdev and "fd00:198:18:1::5" in netdev and "fe80::1:5" in netdev
    assert "0xfd000198001800010000000000000005" in netdev  # NA targets, as raw payload
    # the inet table has nothing to do for it
    assert "chain input" not in script and "chain output" not in script


def test_anti_spoofing_follows_the_deny_mark_drop_and_enforces_in_visibility_mode() -> None:
    rs = ruleset.PodRuleset(
        "ns", "p", egress=ISOLATED, mode=ruleset.PolicyMode.VISIBILITY, anti_spoof=SPOOF
    )
    script = render_nft.render(rs, ["eth0"]).script
    mark = f"0x{render_nft.DENY_MARK:08x}"
    assert _chain(script, "egress_eth0")[1:] == [
        f"meta mark & {mark} == {mark} counter drop",
        "jump anti_spoof",
    ]
    assert 'log prefix "podseg egress spoofed enforce"' in script
    assert render_nft.parse_log_prefix("podseg egress spoofed enforce") == (
        "egress",
        "spoofed",
        "enforce",
    )
    assert render_nft.parse_counter_name("deny.egress.spoofed.enforce") is not None


def test_anti_spoofing_sets_are_always_declared_so_an_address_change_is_a_patch() -> None:
    v4_only = ruleset.PodRuleset("ns", "p", anti_spoof=ruleset.AntiSpoof(own=(A("198.18.1.5"),)))
    before = render_nft.render(v4_only, ["eth0"])
    for name in ("own4", "own6", "local6", "targets6"):
        assert f"  set anti_spoof_{name} {{" in before.script
    moved = ruleset.PodRuleset(
        "ns", "p", anti_spoof=ruleset.AntiSpoof(own=(A("198.18.1.6"), A("fd00::6")))
    )
    after = render_nft.render(moved, ["eth0"])
    assert after.shape == before.shape
    patch = incremental.patch(before, after)
    assert patch is not None
    assert "delete element netdev podseg anti_spoof_own4 { 198.18.1.5 }" in patch
    assert "add element netdev podseg anti_spoof_own6 { fd00::6 }" in patch
    # a namespace that opted out gets no device hook at all (nothing else to drop there)
    plain = render_nft.render(ruleset.PodRuleset("ns", "p"), ["eth0"]).script
    assert "table netdev podseg {" not in plain


def test_neighbour_discovery_passes_an_isolated_pod_only_within_the_link() -> None:
    rs = ruleset.PodRuleset("ns", "p", ingress=ISOLATED, egress=ISOLATED, link=LINK)
    rendered = render_nft.render(rs, ["eth0"])
    script = rendered.script
    assert dict(rendered.sets)["inet nd_link6"] == (
        "::",
        "fd00:198:18:1::1",  # the on-link route to the gateway
        "fe80::/10",
        "ff02::1-ff02::2",
        "ff02::1:ff00:0/104",
    )
    for chain, key in (("nd_ingress", "saddr"), ("nd_egress", "daddr")):
        nd, mld = _chain(script, chain)
        assert f"ip6 hoplimit 255 ip6 {key} @nd_link6 accept" in nd
        assert mld.endswith("ip6 hoplimit 1 ip6 saddr { ::, fe80::/10 } ip6 daddr ff02::/16 accept")
    # a pod sends no router advertisement, and none reaches it from beyond the link
    assert "nd-router-advert" not in _chain(script, "nd_egress")[0]
    assert "mld-listener-query" not in _chain(script, "nd_egress")[1]
    assert "ipv6_link" not in script


def test_quarantine_keeps_only_what_resolving_the_gateway_needs() -> None:
    rs = ruleset.PodRuleset("ns", "p", quarantine=ruleset.Quarantine(), link=LINK)
    rendered = render_nft.render(rs, ["eth0"])
    script = rendered.script
    assert dict(rendered.sets)["inet nd_gateway6"] == (
        "fd00:198:18:1::1",
        "fe80::1",
        "ff02::1:ff00:1",  # the gateways' solicited-node group (both end in ::1)
    )
    assert _chain(script, "quarantine_ingress")[0] == "meta nfproto ipv6 jump nd_quarantine_ingress"
    assert _chain(script, "nd_quarantine_egress") == [
        "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 "
        "ip6 daddr @nd_gateway6 accept",
        "icmpv6 type nd-neighbor-advert ip6 hoplimit 255 ip6 daddr fe80::/10 accept",
    ]
    assert "mld" not in _table(script, "inet") and "nd_link6" not in script
    # without a known gateway the set is declared empty: only the gateway's own
    # solicitation from its link-local address is answered
    bare = render_nft.render(ruleset.PodRuleset("ns", "p", quarantine=ruleset.Quarantine()), [])
    assert dict(bare.sets)["inet nd_gateway6"] == ()


def test_a_link_local_gateway_is_guarded_on_its_interface() -> None:
    guard = containment.node_guard(None, [], containment.parse_ports("tcp:22"), link=LINK)
    assert guard is not None
    script = render_nft.render(ruleset.PodRuleset("ns", "p", node_guard=guard), ["eth0"]).script
    assert '"eth0" . fe80::1' in script
    assert (
        "oifname . ip6 daddr @node_guard_scoped6 meta l4proto . th dport @node_guard_ports "
        "jump node_guard_deny" in _chain(script, "node_guard")
    )
    assert "fd00:198:18:1::1" in script and "198.18.0.1" in script  # the other gateways
    assert "fd00:ec2::254" in script  # metadata over IPv6: every port
