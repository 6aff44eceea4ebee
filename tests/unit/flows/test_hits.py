"""Per-policy hit counters: rendered per policy, named so only known policies become labels,
and booked as a total that never goes back."""

from __future__ import annotations

from agent import metrics, model
from agent.calc import ruleset
from agent.dataplane.nft import render as render_nft
from agent.flows import hits

ING = ruleset.Direction.INGRESS


def _policy(ns: str, name: str) -> model.NetworkPolicy:
    return model.NetworkPolicy(namespace=ns, name=name)


def _value(ns: str, name: str, direction: str = "ingress") -> float:
    got = metrics.REGISTRY.get_sample_value(
        "podseg_rule_hits_total", {"namespace": ns, "policy": name, "direction": direction}
    )
    return got or 0.0


def test_each_isolating_policy_gets_its_own_counting_rules() -> None:
    one = ruleset.AddrRange(4, 1, 1)
    two = ruleset.PeerPort(ruleset.AddrRange(4, 2, 2), 6, ruleset.PortRange(80, 80))
    d = ruleset.DirectionRuleset(
        True,
        (one,),
        (two,),
        ("x/a", "x/b"),
        (ruleset.PolicyPeers("x/a", (one,)), ruleset.PolicyPeers("x/b", (), (two,))),
    )
    out = render_nft.render(ruleset.PodRuleset("x", "p", ingress=d), ["eth0"])
    assert "counter hit.ingress.x/a {" in out.script
    assert "counter hit.ingress.x/b {" in out.script
    assert 'ip saddr @ingress_p0_any4 counter name "hit.ingress.x/a"\n' in out.script
    port_rule = (
        'ip saddr . meta l4proto . th dport @ingress_p1_exact4 counter name "hit.ingress.x/b"'
    )
    assert port_rule in out.script
    assert "    jump ingress_hits\n    ip saddr @ingress_any4 goto ingress_allow" in out.script
    sets = dict(out.sets)
    assert sets["inet ingress_p0_any4"] == ("0.0.0.1",)
    assert sets["inet ingress_p1_exact4"] == ("0.0.0.2 . tcp . 80",)  # one address, one port
    assert sets["inet ingress_p1_tcp_80_v4"] == ()  # its port spec's address set


def test_long_or_odd_policy_keys_get_a_hashed_name() -> None:
    long_key = "ns/" + "n" * 253
    name = render_nft.hit_counter_name(ING, long_key)
    assert len(name) < 64 and name.startswith("hit.ingress.~")
    assert render_nft.parse_hit_counter_name(name) == ("ingress", render_nft.policy_token(long_key))
    assert render_nft.parse_hit_counter_name("deny.ingress.policy.enforce") is None
    assert render_nft.parse_hit_counter_name("hit.sideways.x/a") is None


def test_hits_resolve_only_known_policies_and_drop_deleted_ones() -> None:
    book = hits.Hits()
    long_name = "l" * 253
    known = {"hu/a": _policy("hu", "a"), f"hu/{long_name}": _policy("hu", long_name)}
    start = _value("hu", "a")
    assert book.add("hit.ingress.hu/a", 3, known)
    assert book.add(render_nft.hit_counter_name(ING, f"hu/{long_name}"), 2, known)
    assert book.add("hit.ingress.hu/forged", 5, known)  # a hit name, but no known policy
    assert not book.add("deny.ingress.policy.enforce", 1, known)
    assert _value("hu", "a") == start + 3 and _value("hu", long_name) >= 2
    assert _value("hu", "forged") == 0 and book.unknown == 1
    book.drop_gone({"hu/a": known["hu/a"]})
    assert (
        metrics.REGISTRY.get_sample_value(
            "podseg_rule_hits_total",
            {"namespace": "hu", "policy": long_name, "direction": "ingress"},
        )
        is None
    )
    assert _value("hu", "a") == start + 3


def test_compile_keeps_each_policys_own_peers_beside_the_union() -> None:
    from agent.calc import compile as calc_compile

    def allow(name: str, cidr: str, port: int | None) -> model.NetworkPolicy:
        ports = (model.PolicyPort("TCP", port),) if port else ()
        rule = model.PolicyRule((model.Peer(ip_block=model.IPBlock(cidr)),), ports)
        return model.NetworkPolicy("x", name, ingress=(rule,))

    target = model.Pod(namespace="x", name="p", ips=("198.18.0.9",))
    rs = calc_compile.compile_pod(
        target,
        [allow("a", "198.18.1.0/25", None), allow("b", "198.18.1.128/25", 80)],
        {},
        [target],
    )
    own = {p.policy: p for p in rs.ingress.per_policy}
    assert sorted(own) == ["x/a", "x/b"] == list(rs.ingress.policies)
    assert own["x/a"].any_port_peers == (ruleset.AddrRange(4, 0xC6120100, 0xC612017F),)
    assert own["x/a"].port_peers == ()
    assert [p.addrs.first for p in own["x/b"].port_peers] == [0xC6120180]
    assert own["x/b"].any_port_peers == ()


def test_iptables_counts_each_policy_with_rules_that_only_count() -> None:
    from agent.dataplane.ipt import render as render_ipt

    one = ruleset.AddrRange(4, 0xC6120101, 0xC6120101)
    d = ruleset.DirectionRuleset(True, (one,), (), ("x/a",), (ruleset.PolicyPeers("x/a", (one,)),))
    out = render_ipt.render(ruleset.PodRuleset("x", "p", ingress=d), ["eth0"])
    hit = [line for line in out.v4.splitlines() if "hit.ingress.x/a" in line]
    assert hit == [
        f'-A PODSEG-INPUT -m comment --comment "hit.ingress.x/a" '
        f"-m set --match-set {render_ipt.PREFIX}{render_ipt.GEN}-i4h0a src"
    ]
    saved = "\n".join(
        [
            "[7:420] -A PODSEG-INPUT -m comment --comment hit.ingress.x/a -m set --match-set S src",
            "[2:120] -A PODSEG-INPUT -m comment --comment hit.ingress.x/a -m set --match-set T src",
            '[3:180] -A PODSEG-INPUT -m comment --comment "deny.ingress.policy.enforce"',
            "[5:300] -A PODSEG-INPUT -m comment --comment other.thing -m set --match-set S src",
        ]
    )
    assert render_ipt.parse_counters(saved) == {
        "hit.ingress.x/a": 9,
        "deny.ingress.policy.enforce": 3,
    }
