"""Strict mode judges established connections through the admin tiers as the kernel does:
Admin first (Pass goes on), NetworkPolicy where it isolates, else Baseline, else allow."""

from __future__ import annotations

import dataclasses

from agent.calc import ruleset, verdict

TCP, UDP, ICMP = 6, 17, 1
PEER = ruleset.AddrRange(4, 0xC6120014, 0xC6120014)  # 198.18.0.20
A = ruleset.TierAction


def entry(action: ruleset.TierAction, protocol: int, first: int, last: int) -> ruleset.TierEntry:
    element = ruleset.PeerPort(PEER, protocol, ruleset.PortRange(first, last))
    return ruleset.TierEntry("ClusterNetworkPolicy/p", f"{action}-{first}", action, (element,))


def allows(d: ruleset.DirectionRuleset, protocol: int, port: int | None) -> bool:
    rs = ruleset.PodRuleset("prod", "web", ingress=d)
    return verdict.allows(rs, ruleset.Direction.INGRESS, "198.18.0.20", protocol, port)


ISOLATED = ruleset.DirectionRuleset(
    isolated=True,
    port_peers=(ruleset.PeerPort(PEER, TCP, ruleset.PortRange(80, 81)),),
    admin=(entry(A.DENY, TCP, 80, 80), entry(A.PASS, TCP, 81, 81), entry(A.ACCEPT, TCP, 82, 82)),
    baseline=(entry(A.ACCEPT, TCP, 83, 83),),
)


def test_admin_then_networkpolicy() -> None:
    assert [allows(ISOLATED, TCP, port) for port in (80, 81, 82, 83)] == [False, True, True, False]


def test_baseline_only_without_isolation() -> None:
    open_ = ruleset.DirectionRuleset(
        baseline=(entry(A.DENY, TCP, 90, 90), entry(A.DENY, ruleset.OTHER_PROTOCOL, 0, 65535))
    )
    assert not allows(open_, TCP, 90)
    assert allows(open_, TCP, 91)
    assert not allows(open_, ICMP, None)  # protocols without ports: the OTHER elements
    assert allows(open_, UDP, 90)


def test_any_tier_change_may_remove_an_allow() -> None:
    old = ruleset.PodRuleset("prod", "web", ingress=ISOLATED)
    more_ports = dataclasses.replace(
        ISOLATED,
        port_peers=(ruleset.PeerPort(PEER, TCP, ruleset.PortRange(80, 90)),),
    )
    new = ruleset.PodRuleset("prod", "web", ingress=more_ports)
    # Without tiers, widening the policy's ports never removes an allow...
    plain_old = ruleset.PodRuleset(
        "prod", "web", ingress=dataclasses.replace(ISOLATED, admin=(), baseline=())
    )
    plain_new = ruleset.PodRuleset(
        "prod", "web", ingress=dataclasses.replace(more_ports, admin=(), baseline=())
    )
    assert not verdict.removes_allows(plain_old, plain_new)
    # ...with tiers every change is checked (conservative), the same in the reference form.
    assert verdict.removes_allows(old, new)
    assert verdict._removes_allows_reference(old, new)
    assert not verdict.removes_allows(old, old)
