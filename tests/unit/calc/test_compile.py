"""NetworkPolicy v1 semantics of `compile_pod`, checked through what the ruleset allows."""

from __future__ import annotations

import random

from agent import model
from agent.calc import compile as calc_compile
from agent.calc import intervals, ruleset

TCP, UDP, SCTP = 6, 17, 132
Sel = model.LabelSelector
Req = model.SelectorRequirement


def sel(**labels: str) -> model.LabelSelector:
    return Sel(match_labels=tuple(sorted(labels.items())))


def pod(
    ns: str,
    name: str,
    ips: tuple[str, ...],
    ports: tuple[model.ContainerPort, ...] = (),
    **labels: str,
) -> model.Pod:
    return model.Pod(namespace=ns, name=name, labels=labels, ips=ips, container_ports=ports)


def policy(
    ns: str,
    name: str,
    selector: model.LabelSelector | None = None,
    ingress: tuple[model.PolicyRule, ...] = (),
    egress: tuple[model.PolicyRule, ...] = (),
    types: tuple[str, ...] = ("Ingress",),
) -> model.NetworkPolicy:
    return model.NetworkPolicy(
        namespace=ns,
        name=name,
        pod_selector=Sel() if selector is None else selector,
        ingress=ingress,
        egress=egress,
        policy_types=types,
    )


def rule(*peers: model.Peer, ports: tuple[model.PolicyPort, ...] = ()) -> model.PolicyRule:
    return model.PolicyRule(peers=peers, ports=ports)


def allows(d: ruleset.DirectionRuleset, ip: str, proto: int, port: int) -> bool:
    """The reference meaning of a DirectionRuleset for one packet."""
    if not d.isolated:
        return True
    a = intervals.address_range(ip)
    if intervals.contains(d.any_port_peers, a.family, a.first):
        return True
    return any(
        e.addrs.family == a.family
        and e.addrs.first <= a.first <= e.addrs.last
        and e.protocol == proto
        and e.ports.first <= port <= e.ports.last
        for e in d.port_peers
    )


WEB = pod(
    "prod",
    "web",
    ("198.18.0.10", "fd00:198:18::10"),
    (model.ContainerPort(8080, "TCP", "http"), model.ContainerPort(5353, "UDP", "dns")),
    app="web",
)
CLIENT = pod("prod", "client", ("198.18.0.20",), app="client")
OTHER_NS_CLIENT = pod("dev", "client", ("198.18.1.20", "fd00:198:18::1:20"), app="client")
DB = pod("dev", "db", ("198.18.1.30",), (model.ContainerPort(5432, "TCP", "http"),), app="db")
NAMESPACES = {
    "prod": model.Namespace("prod", {"env": "prod"}),
    "dev": model.Namespace("dev", {"env": "dev"}),
}
PODS = (WEB, CLIENT, OTHER_NS_CLIENT, DB)


def compile_web(
    *policies: model.NetworkPolicy, pods: tuple[model.Pod, ...] = PODS
) -> ruleset.PodRuleset:
    return calc_compile.compile_pod(WEB, policies, NAMESPACES, pods)


def test_no_policy_means_not_isolated() -> None:
    rs = compile_web()
    assert rs == ruleset.PodRuleset("prod", "web")
    assert not rs.ingress.isolated and not rs.egress.isolated


def test_policy_selection_namespace_labels_and_malformed_selector() -> None:
    other_ns = policy("dev", "all", types=("Ingress",))
    not_matching = policy("prod", "db-only", sel(app="db"))
    malformed = model.NetworkPolicy("prod", "broken", pod_selector=None)
    assert not compile_web(other_ns, not_matching, malformed).ingress.isolated
    selecting = policy("prod", "web", sel(app="web"))
    rs = compile_web(other_ns, not_matching, malformed, selecting)
    assert rs.ingress.isolated and rs.ingress.policies == ("prod/web",)
    assert rs.ingress.any_port_peers == () and rs.ingress.port_peers == ()  # deny all
    assert [p.key for p in calc_compile.policies_selecting(WEB, [selecting, other_ns])] == [
        "prod/web"
    ]


def test_policy_types_pick_directions() -> None:
    ing = compile_web(policy("prod", "i", types=("Ingress",)))
    assert ing.ingress.isolated and not ing.egress.isolated
    assert ing.egress == ruleset.DirectionRuleset()
    eg = compile_web(policy("prod", "e", types=("Egress",)))
    assert eg.egress.isolated and not eg.ingress.isolated
    assert eg.egress.policies == ("prod/e",)
    both = compile_web(policy("prod", "b", types=("Ingress", "Egress")))
    assert both.ingress.isolated and both.egress.isolated


def test_empty_rule_allows_everything_both_families() -> None:
    rs = compile_web(policy("prod", "open", ingress=(rule(),)))
    assert rs.ingress.any_port_peers == intervals.ALL_ADDRESSES
    assert rs.ingress.port_peers == ()


def test_rule_without_peers_but_with_ports() -> None:
    rs = compile_web(policy("prod", "p", ingress=(rule(ports=(model.PolicyPort("TCP", 80),)),)))
    assert allows(rs.ingress, "203.0.113.9", TCP, 80)
    assert allows(rs.ingress, "2001:db8::1", TCP, 80)
    assert not allows(rs.ingress, "203.0.113.9", TCP, 81)
    assert not allows(rs.ingress, "203.0.113.9", UDP, 80)


def test_multiple_policies_union_and_sorted_policy_names() -> None:
    a = policy(
        "prod",
        "zeta",
        ingress=(
            rule(model.Peer(pod_selector=sel(app="client")), ports=(model.PolicyPort("TCP", 80),)),
        ),
    )
    b = policy(
        "prod",
        "alpha",
        sel(app="web"),
        ingress=(
            rule(
                model.Peer(ip_block=model.IPBlock("198.18.9.0/24")),
                ports=(model.PolicyPort("UDP", 53),),
            ),
        ),
    )
    rs = compile_web(a, b)
    assert rs.ingress.policies == ("prod/alpha", "prod/zeta")
    assert allows(rs.ingress, "198.18.0.20", TCP, 80)
    assert allows(rs.ingress, "198.18.9.7", UDP, 53)
    assert not allows(rs.ingress, "198.18.0.20", UDP, 53)
    assert not allows(rs.ingress, "198.18.9.7", TCP, 80)


def test_pod_selector_peer_is_limited_to_policy_namespace() -> None:
    rs = compile_web(
        policy("prod", "p", ingress=(rule(model.Peer(pod_selector=sel(app="client"))),))
    )
    assert allows(rs.ingress, "198.18.0.20", TCP, 1)
    assert not allows(rs.ingress, "198.18.1.20", TCP, 1)  # same labels, other namespace
    assert not allows(rs.ingress, "198.18.0.10", TCP, 1)


def test_namespace_selector_peer_takes_all_pods_of_matching_namespaces() -> None:
    rs = compile_web(
        policy("prod", "p", ingress=(rule(model.Peer(namespace_selector=sel(env="dev"))),))
    )
    assert allows(rs.ingress, "198.18.1.20", TCP, 1)
    assert allows(rs.ingress, "fd00:198:18::1:20", UDP, 9)
    assert allows(rs.ingress, "198.18.1.30", TCP, 1)
    assert not allows(rs.ingress, "198.18.0.20", TCP, 1)


def test_namespace_and_pod_selector_in_one_peer_vs_two_peers() -> None:
    both = model.Peer(namespace_selector=sel(env="dev"), pod_selector=sel(app="client"))
    rs = compile_web(policy("prod", "and", ingress=(rule(both),)))
    assert allows(rs.ingress, "198.18.1.20", TCP, 1)  # dev client
    assert not allows(rs.ingress, "198.18.1.30", TCP, 1)  # dev db
    assert not allows(rs.ingress, "198.18.0.20", TCP, 1)  # prod client
    two = rule(
        model.Peer(namespace_selector=sel(env="dev")), model.Peer(pod_selector=sel(app="client"))
    )
    rs = compile_web(policy("prod", "or", ingress=(two,)))
    assert allows(rs.ingress, "198.18.1.20", TCP, 1)
    assert allows(rs.ingress, "198.18.1.30", TCP, 1)
    assert allows(rs.ingress, "198.18.0.20", TCP, 1)


def test_implicit_namespace_name_label_and_missing_namespace_objects() -> None:
    by_name = model.Peer(namespace_selector=sel(**{"kubernetes.io/metadata.name": "dev"}))
    rs = calc_compile.compile_pod(WEB, [policy("prod", "p", ingress=(rule(by_name),))], {}, PODS)
    assert allows(rs.ingress, "198.18.1.30", TCP, 1)
    assert not allows(rs.ingress, "198.18.0.20", TCP, 1)
    # No Namespace objects at all: `{}` still matches every namespace that has pods,
    # a label selector matches none of them.
    everyone = model.Peer(namespace_selector=Sel())
    rs = calc_compile.compile_pod(WEB, [policy("prod", "p", ingress=(rule(everyone),))], {}, PODS)
    assert allows(rs.ingress, "198.18.1.30", TCP, 1) and allows(rs.ingress, "198.18.0.20", TCP, 1)
    labelled = model.Peer(namespace_selector=sel(env="dev"))
    rs = calc_compile.compile_pod(WEB, [policy("prod", "p", ingress=(rule(labelled),))], {}, PODS)
    assert rs.ingress.any_port_peers == ()


def test_namespace_match_expressions() -> None:
    peer = model.Peer(namespace_selector=Sel(match_expressions=(Req("env", "NotIn", ("prod",)),)))
    rs = compile_web(policy("prod", "p", ingress=(rule(peer),)))
    assert allows(rs.ingress, "198.18.1.20", TCP, 1)
    assert not allows(rs.ingress, "198.18.0.20", TCP, 1)


def test_ip_block_with_except() -> None:
    block = model.Peer(
        ip_block=model.IPBlock("198.18.0.0/16", ("198.18.5.0/24", "198.18.6.128/25"))
    )
    rs = compile_web(policy("prod", "p", ingress=(rule(block),)))
    assert allows(rs.ingress, "198.18.4.255", TCP, 1)
    assert not allows(rs.ingress, "198.18.5.1", TCP, 1)
    assert allows(rs.ingress, "198.18.6.127", TCP, 1)
    assert not allows(rs.ingress, "198.18.6.128", TCP, 1)
    assert not allows(rs.ingress, "198.19.0.1", TCP, 1)
    v6 = model.Peer(ip_block=model.IPBlock("fd00:198:18::/48", ("fd00:198:18:1::/64",)))
    rs = compile_web(policy("prod", "p", ingress=(rule(v6),)))
    assert allows(rs.ingress, "fd00:198:18:2::1", TCP, 1)
    assert not allows(rs.ingress, "fd00:198:18:1::1", TCP, 1)
    assert not allows(rs.ingress, "198.18.0.1", TCP, 1)


def test_ports_number_end_port_sctp_udp_and_all_ports() -> None:
    ports = (
        model.PolicyPort("TCP", 80),
        model.PolicyPort("TCP", 9000, end_port=9010),
        model.PolicyPort("SCTP", 3868),
        model.PolicyPort("UDP", None),
    )
    rs = compile_web(policy("prod", "p", ingress=(rule(ports=ports),)))
    d = rs.ingress
    assert allows(d, "198.18.0.20", TCP, 80) and not allows(d, "198.18.0.20", TCP, 81)
    assert allows(d, "198.18.0.20", TCP, 9000) and allows(d, "198.18.0.20", TCP, 9010)
    assert not allows(d, "198.18.0.20", TCP, 9011) and not allows(d, "198.18.0.20", TCP, 8999)
    assert allows(d, "198.18.0.20", SCTP, 3868) and not allows(d, "198.18.0.20", TCP, 3868)
    assert allows(d, "198.18.0.20", UDP, 0) and allows(d, "198.18.0.20", UDP, 65535)
    assert not allows(d, "198.18.0.20", 1, 0)  # ICMP is not "all ports"
    assert d.any_port_peers == ()


def test_invalid_peers_and_ports_never_widen() -> None:
    bad_peer = model.Peer(pod_selector=sel(app="client"), invalid=True)
    rs = compile_web(policy("prod", "p", ingress=(rule(bad_peer),)))
    assert rs.ingress.isolated and rs.ingress.any_port_peers == () and rs.ingress.port_peers == ()
    # An ipBlock that fails to parse, or that is combined with a selector, matches nothing.
    for peer in (
        model.Peer(ip_block=model.IPBlock("not-a-cidr")),
        model.Peer(ip_block=model.IPBlock("0.0.0.0/0"), pod_selector=Sel()),
        model.Peer(),
    ):
        rs = compile_web(policy("prod", "p", ingress=(rule(peer),)))
        assert rs.ingress.any_port_peers == () and rs.ingress.port_peers == ()
    # A rule whose ports are all invalid allows nothing (not "all ports").
    for port in (
        model.PolicyPort("TCP", 80, invalid=True),
        model.PolicyPort("ICMP", 80),
        model.PolicyPort("TCP", 0),
        model.PolicyPort("TCP", 70000),
        model.PolicyPort("TCP", 90, end_port=80),
        model.PolicyPort("TCP", None, end_port=80),
        model.PolicyPort("TCP", "http", end_port=9000),
        model.PolicyPort("TCP", "no-such-port"),
    ):
        rs = compile_web(policy("prod", "p", ingress=(rule(ports=(port,)),)))
        assert rs.ingress.any_port_peers == () and rs.ingress.port_peers == (), port
    # A valid sibling is kept, the invalid part still adds nothing.
    ports = (model.PolicyPort("TCP", 80, invalid=True), model.PolicyPort("TCP", 443))
    rs = compile_web(
        policy(
            "prod",
            "p",
            ingress=(rule(bad_peer, model.Peer(pod_selector=sel(app="client")), ports=ports),),
        )
    )
    assert allows(rs.ingress, "198.18.0.20", TCP, 443)
    assert not allows(rs.ingress, "198.18.0.20", TCP, 80)
    assert not allows(rs.ingress, "198.18.1.20", TCP, 443)


def test_ingress_named_port_resolves_on_local_pod_by_name_and_protocol() -> None:
    ports = (
        model.PolicyPort("TCP", "http"),
        model.PolicyPort("TCP", "dns"),
        model.PolicyPort("UDP", "dns"),
    )
    rs = compile_web(policy("prod", "p", ingress=(rule(ports=ports),)))
    assert allows(rs.ingress, "198.18.1.30", TCP, 8080)
    assert not allows(rs.ingress, "198.18.1.30", TCP, 5432)  # db's "http" is not ours
    assert allows(rs.ingress, "198.18.1.30", UDP, 5353)
    assert not allows(rs.ingress, "198.18.1.30", TCP, 5353)  # "dns" is UDP only


def test_egress_named_port_resolves_per_destination_pod() -> None:
    to_pods = model.Peer(namespace_selector=Sel())
    rs = compile_web(
        policy(
            "prod",
            "e",
            types=("Egress",),
            egress=(rule(to_pods, ports=(model.PolicyPort("TCP", "http"),)),),
        )
    )
    d = rs.egress
    assert allows(d, "198.18.1.30", TCP, 5432)  # db's http
    assert not allows(d, "198.18.1.30", TCP, 8080)
    assert allows(d, "198.18.0.10", TCP, 8080)  # web's own http (v4 and v6)
    assert allows(d, "fd00:198:18::10", TCP, 8080)
    assert not allows(d, "198.18.0.20", TCP, 8080)  # client declares no http port


def test_egress_named_port_with_ip_block_and_without_peers() -> None:
    named = (model.PolicyPort("TCP", "http"),)
    block = model.Peer(ip_block=model.IPBlock("198.18.1.0/24"))
    rs = compile_web(policy("prod", "e", types=("Egress",), egress=(rule(block, ports=named),)))
    assert allows(rs.egress, "198.18.1.30", TCP, 5432)  # known pod inside the block
    assert not allows(rs.egress, "198.18.0.10", TCP, 8080)  # pod outside the block
    assert not allows(rs.egress, "198.18.1.99", TCP, 5432)  # not a known pod
    rs = compile_web(policy("prod", "e", types=("Egress",), egress=(rule(ports=named),)))
    assert allows(rs.egress, "198.18.1.30", TCP, 5432)
    assert allows(rs.egress, "fd00:198:18::10", TCP, 8080)
    assert not allows(rs.egress, "203.0.113.1", TCP, 8080)  # external: no name to resolve


def test_host_network_finished_and_ipless_pods_are_not_peers() -> None:
    host = model.Pod(
        "prod", "hostnet", labels={"app": "client"}, ips=("198.18.0.1",), host_network=True
    )
    done = model.Pod(
        "prod", "done", labels={"app": "client"}, ips=("198.18.0.77",), phase="Succeeded"
    )
    pending = model.Pod("prod", "pending", labels={"app": "client"})
    pods = (*PODS, host, done, pending)
    rs = compile_web(
        policy("prod", "p", ingress=(rule(model.Peer(pod_selector=sel(app="client"))),)), pods=pods
    )
    assert allows(rs.ingress, "198.18.0.20", TCP, 1)
    assert not allows(rs.ingress, "198.18.0.1", TCP, 1)
    assert not allows(rs.ingress, "198.18.0.77", TCP, 1)
    assert rs.ingress.any_port_peers == (intervals.address_range("198.18.0.20"),)


def test_selector_peer_matching_no_pod_allows_nothing() -> None:
    rs = compile_web(policy("prod", "p", ingress=(rule(model.Peer(pod_selector=sel(app="nope"))),)))
    assert rs.ingress.isolated and rs.ingress.any_port_peers == ()


def test_egress_direction_uses_destinations() -> None:
    rs = compile_web(
        policy(
            "prod",
            "e",
            types=("Ingress", "Egress"),
            egress=(
                rule(
                    model.Peer(pod_selector=sel(app="client")), ports=(model.PolicyPort("UDP", 53),)
                ),
            ),
        )
    )
    assert allows(rs.egress, "198.18.0.20", UDP, 53)
    assert not allows(rs.egress, "198.18.0.20", TCP, 53)
    assert rs.ingress.isolated and rs.ingress.any_port_peers == ()


def test_any_port_peers_are_not_repeated_in_port_peers() -> None:
    rs = compile_web(
        policy(
            "prod",
            "p",
            ingress=(
                rule(model.Peer(ip_block=model.IPBlock("198.18.0.0/24"))),
                rule(
                    model.Peer(ip_block=model.IPBlock("198.18.0.0/23")),
                    ports=(model.PolicyPort("TCP", 80),),
                ),
            ),
        )
    )
    assert rs.ingress.any_port_peers == (intervals.cidr_range("198.18.0.0/24"),)
    assert rs.ingress.port_peers == (
        ruleset.PeerPort(intervals.cidr_range("198.18.1.0/24"), TCP, ruleset.PortRange(80, 80)),
    )


def _random_world(rnd: random.Random) -> tuple[list[model.NetworkPolicy], list[model.Pod]]:
    pods = [WEB]
    for i in range(40):
        ns = rnd.choice(("prod", "dev", "qa"))
        ips = (f"198.18.{i // 200}.{i % 200 + 30}",) + ((f"fd00:198:18::{i:x}",) if i % 3 else ())
        declared = (model.ContainerPort(rnd.choice((80, 8080, 9000)), "TCP", "http"),)
        pods.append(pod(ns, f"p{i}", ips, declared, app=rnd.choice(("a", "b", "c"))))
    peers = [
        model.Peer(pod_selector=sel(app="a")),
        model.Peer(namespace_selector=sel(env="dev")),
        model.Peer(namespace_selector=Sel(), pod_selector=sel(app="b")),
        model.Peer(ip_block=model.IPBlock("198.18.0.0/26", ("198.18.0.32/28",))),
    ]
    ports = [
        model.PolicyPort("TCP", 80),
        model.PolicyPort("TCP", "http"),
        model.PolicyPort("UDP", 1000, end_port=2000),
        model.PolicyPort("SCTP", None),
    ]
    policies = []
    for i in range(8):
        rules = tuple(
            rule(
                *rnd.sample(peers, rnd.randrange(0, 3)),
                ports=tuple(rnd.sample(ports, rnd.randrange(0, 3))),
            )
            for _ in range(rnd.randrange(1, 4))
        )
        policies.append(
            policy(
                "prod",
                f"np{i}",
                sel(app="web") if i % 2 else Sel(),
                ingress=rules,
                egress=rules[::-1],
                types=("Ingress", "Egress"),
            )
        )
    return policies, pods


def test_result_is_independent_of_input_order() -> None:
    rnd = random.Random(42)
    for _ in range(20):
        policies, pods = _random_world(rnd)
        want = calc_compile.compile_pod(WEB, policies, NAMESPACES, pods)
        assert want.ingress.port_peers or want.ingress.any_port_peers
        for _ in range(3):
            rnd.shuffle(policies)
            rnd.shuffle(pods)
            assert calc_compile.compile_pod(WEB, policies, NAMESPACES, pods) == want
        # duplicated input objects change nothing either
        assert (
            calc_compile.compile_pod(WEB, policies + policies[:2], NAMESPACES, pods + pods[:5])
            == want
        )


def test_compile_indexed_matches_compile_pod() -> None:
    pol = policy("prod", "p", ingress=(rule(model.Peer(namespace_selector=Sel())),))
    index = calc_compile.build_index(NAMESPACES, PODS)
    assert calc_compile.compile_indexed(WEB, [pol], index) == compile_web(pol)
