"""The incremental patch (pure): when it applies, and exactly which elements it touches."""

from __future__ import annotations

import dataclasses

from agent.calc import intervals, ruleset
from agent.dataplane.nft import incremental
from agent.dataplane.nft import render as render_nft

A = intervals.address_range
P = ruleset.PortRange


def _rs(
    *peers: str, ports: tuple[ruleset.PeerPort, ...] = (), egress: bool = False
) -> ruleset.PodRuleset:
    d = ruleset.DirectionRuleset(
        isolated=True,
        any_port_peers=intervals.merge_addrs(A(p) for p in peers),
        port_peers=ports,
        policies=("prod/allow",),
    )
    return ruleset.PodRuleset(
        "prod", "web", ingress=d, egress=d if egress else ruleset.DirectionRuleset()
    )


def test_peer_change_is_an_element_patch_that_replaces_the_state_rule() -> None:
    web = ruleset.PeerPort(A("198.18.0.20"), 6, P(80, 81))
    old = render_nft.render(_rs("198.18.0.1", "198.18.0.3", ports=(web,)), ["eth0"])
    new = render_nft.render(
        _rs(
            "198.18.0.3",
            "fd00:198:18::5",
            ports=(ruleset.PeerPort(A("198.18.0.9"), 6, P(80, 81)), web),
        ),
        ["eth0"],
    )
    assert old.shape == new.shape and old.fingerprint != new.fingerprint
    script = incremental.patch(old, new)
    # a port range's peers are addresses in the set of its port spec (`tcp 80-81`)
    assert script == (
        "flush chain inet podseg state\n"
        f'add rule inet podseg state return comment "podseg state={new.fingerprint}"\n'
        "delete element inet podseg ingress_any4 { 198.18.0.1 }\n"
        "add element inet podseg ingress_any6 { fd00:198:18::5 }\n"
        "add element inet podseg ingress_tcp_80_81_v4 { 198.18.0.9 }\n"
    )
    assert incremental.counts(old, new) == (1, 2)


def test_a_new_port_spec_changes_the_skeleton() -> None:
    old = render_nft.render(_rs("198.18.0.1"), ["eth0"])
    new = render_nft.render(
        _rs("198.18.0.1", ports=(ruleset.PeerPort(A("198.18.0.9"), 6, P(80, 81)),)), ["eth0"]
    )
    assert old.shape != new.shape and incremental.patch(old, new) is None


def test_merged_ranges_are_replaced_not_overlapped() -> None:
    # 198.18.0.1 and .2 merge into one range when .2 arrives: the old single element goes.
    old = render_nft.render(_rs("198.18.0.1"), ["eth0"])
    new = render_nft.render(_rs("198.18.0.1", "198.18.0.2"), ["eth0"])
    script = incremental.patch(old, new)
    assert script is not None
    assert "delete element inet podseg ingress_any4 { 198.18.0.1 }" in script
    assert "add element inet podseg ingress_any4 { 198.18.0.1-198.18.0.2 }" in script
    assert script.index("delete element") < script.index("add element")


def test_same_ruleset_is_an_empty_patch() -> None:
    one = render_nft.render(_rs("198.18.0.1"), ["eth0"])
    assert incremental.patch(one, render_nft.render(_rs("198.18.0.1"), ["eth0"])) == ""


def test_skeleton_changes_need_a_replace() -> None:
    base = render_nft.render(_rs("198.18.0.1"), ["eth0"])
    # interfaces only shape the egress side
    assert render_nft.render(_rs("198.18.0.1"), ["eth0", "net1"]).shape == base.shape
    for other in (
        render_nft.render(_rs("198.18.0.1", egress=True), ["eth0"]),  # a direction isolated
        render_nft.render(_rs("198.18.0.1", egress=True), ["eth0", "net1"]),  # interfaces
        render_nft.render(
            dataclasses.replace(
                _rs("198.18.0.1"),
                ingress=dataclasses.replace(_rs().ingress, policies=("prod/other",)),
            ),
            ["eth0"],
        ),  # the isolating policies
        render_nft.render(ruleset.PodRuleset("prod", "web"), ["eth0"]),
    ):
        assert other.shape != base.shape
        assert incremental.patch(base, other) is None
    # a Rendered without structure (e.g. from another renderer) never patches
    bare = render_nft.Rendered(base.fingerprint, text=base.script)
    assert incremental.patch(bare, base) is None and incremental.patch(base, bare) is None


def test_sets_are_every_named_sets_elements_from_the_tables() -> None:
    rendered = render_nft.render(
        _rs("198.18.0.1", "198.18.0.7", "fd00:198:18::1", egress=True), ["eth0"]
    )
    sets = dict(rendered.sets)
    assert sets["inet ingress_any4"] == ("198.18.0.1", "198.18.0.7")
    assert sets["inet egress_any6"] == ("fd00:198:18::1",)
    assert sets["inet egress_exact4"] == ()
    assert [name for name, _ in rendered.sets] == sorted(sets) and len(
        sets
    ) == 9  # any, exact x 4/6 x 2 directions (no port spec), nd_link6
    assert sets["inet nd_link6"] == ("::", "fe80::/10", "ff02::1-ff02::2", "ff02::1:ff00:0/104")
    # the same elements the tables hold and the script lists (the state chain has no set)
    inet, netdev = rendered.tables
    assert {f"inet {s.name}": s.elements for s in inet.sets} == sets and not netdev.sets
    assert "      198.18.0.1,\n      198.18.0.7\n    }" in rendered.script
    # elements are not part of the skeleton
    empty = render_nft.render(_rs(egress=True), ["eth0"])
    assert empty.shape == rendered.shape
