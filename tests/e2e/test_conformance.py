"""NetworkPolicy conformance, ported from the upstream Kubernetes netpol e2e model.

Namespaces x, y, z with pods a, b, c (labels `ns=<ns>`, `pod=<pod>`), servers on 80 and 81
for TCP and UDP; every case applies policies through the API emulator and probes the full
9x9 matrix with live connections from inside the pod namespaces until it matches the truth
table (a blocked connection must time out: no reset, no local EPERM).
"""

from __future__ import annotations

from typing import Any

from tests.support.live import Model


def sel(**labels: str) -> dict[str, Any]:
    return {"matchLabels": labels}


def expr(key: str, op: str, *values: str) -> dict[str, Any]:
    item: dict[str, Any] = {"key": key, "operator": op}
    if values:
        item["values"] = list(values)
    return {"matchExpressions": [item]}


def test_default_deny_ingress(model: Model) -> None:
    model.policy("x", "deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})
    r = model.reach().ingress("x/*", False).expect("x/*", "x/*", False)
    model.converge(r)


def test_default_deny_all(model: Model) -> None:
    model.policy("x", "deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    model.converge(model.reach().ingress("x/*", False).egress("x/*", False))


def test_allow_from_pods_in_server_namespace_by_pod_selector(model: Model) -> None:
    model.policy(
        "x",
        "allow-b",
        {"podSelector": sel(pod="a"), "ingress": [{"from": [{"podSelector": sel(pod="b")}]}]},
    )
    model.converge(model.reach().ingress("x/a", False).expect("x/b", "x/a", True))


def test_allow_only_from_other_namespace_by_namespace_selector(model: Model) -> None:
    model.policy(
        "x",
        "allow-y",
        {"podSelector": sel(pod="a"), "ingress": [{"from": [{"namespaceSelector": sel(ns="y")}]}]},
    )
    model.converge(model.reach().ingress("x/a", False).expect("y/*", "x/a", True))


def test_pod_selector_match_expressions(model: Model) -> None:
    model.policy(
        "x",
        "expr",
        {
            "podSelector": sel(pod="a"),
            "ingress": [{"from": [{"podSelector": expr("pod", "In", "b")}]}],
        },
    )
    model.converge(model.reach().ingress("x/a", False).expect("x/b", "x/a", True))


def test_namespace_selector_match_expressions(model: Model) -> None:
    model.policy(
        "x",
        "expr",
        {
            "podSelector": sel(pod="a"),
            "ingress": [{"from": [{"namespaceSelector": expr("ns", "In", "y")}]}],
        },
    )
    model.converge(model.reach().ingress("x/a", False).expect("y/*", "x/a", True))


def test_pod_selector_or_namespace_selector(model: Model) -> None:
    peers = [{"namespaceSelector": expr("ns", "NotIn", "x")}, {"podSelector": sel(pod="b")}]
    model.policy("x", "or", {"podSelector": sel(pod="a"), "ingress": [{"from": peers}]})
    r = model.reach().ingress("x/a", False).expect("y/*", "x/a", True).expect("z/*", "x/a", True)
    model.converge(r.expect("x/b", "x/a", True))


def test_pod_selector_and_namespace_selector(model: Model) -> None:
    peer = {"namespaceSelector": expr("ns", "NotIn", "x"), "podSelector": sel(pod="b")}
    model.policy("x", "and", {"podSelector": sel(pod="a"), "ingress": [{"from": [peer]}]})
    r = model.reach().ingress("x/a", False).expect("y/b", "x/a", True).expect("z/b", "x/a", True)
    model.converge(r)


def test_multiple_pod_selectors_and_namespace_selectors(model: Model) -> None:
    peer = {
        "namespaceSelector": expr("ns", "NotIn", "x"),
        "podSelector": expr("pod", "In", "b", "c"),
    }
    model.policy("x", "multi", {"podSelector": sel(pod="a"), "ingress": [{"from": [peer]}]})
    r = model.reach().ingress("x/a", False)
    for src in ("y/b", "y/c", "z/b", "z/c"):
        r.expect(src, "x/a", True)
    model.converge(r)


def test_any_of_several_pod_selectors(model: Model) -> None:
    peers = [{"podSelector": sel(pod="b")}, {"podSelector": sel(pod="c")}]
    model.policy("x", "any", {"podSelector": sel(pod="a"), "ingress": [{"from": peers}]})
    r = model.reach().ingress("x/a", False).expect("x/b", "x/a", True).expect("x/c", "x/a", True)
    model.converge(r)


def test_pod_in_other_namespace_by_pod_and_namespace_selector(model: Model) -> None:
    peer = {"namespaceSelector": sel(ns="y"), "podSelector": sel(pod="a")}
    model.policy("x", "ya", {"podSelector": sel(pod="a"), "ingress": [{"from": [peer]}]})
    model.converge(model.reach().ingress("x/a", False).expect("y/a", "x/a", True))


def test_ports(model: Model) -> None:
    rule = {
        "from": [{"namespaceSelector": sel(ns="y")}],
        "ports": [{"port": 81, "protocol": "TCP"}],
    }
    model.policy("x", "port81", {"podSelector": sel(pod="a"), "ingress": [rule]})
    r = (
        model.reach()
        .ingress("x/a", False)
        .expect("y/*", "x/a", True, ports=[81], protocols=["tcp"])
    )
    model.converge(r)


def test_stacked_policies_with_overlapping_pod_selectors(model: Model) -> None:
    for port in (80, 81):
        rule = {
            "from": [{"namespaceSelector": sel(ns="y")}],
            "ports": [{"port": port, "protocol": "TCP"}],
        }
        model.policy("x", f"p{port}", {"podSelector": sel(pod="a"), "ingress": [rule]})
    r = model.reach().ingress("x/a", False).expect("y/*", "x/a", True, protocols=["tcp"])
    model.converge(r)


def test_allow_all_ingress(model: Model) -> None:
    model.policy("x", "deny", {"podSelector": {}, "policyTypes": ["Ingress"]})
    model.policy("x", "allow-all", {"podSelector": {}, "ingress": [{}]})
    model.converge(model.reach())


def test_named_port_ingress(model: Model) -> None:
    model.policy(
        "x",
        "named",
        {"podSelector": sel(pod="a"), "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]},
    )
    model.converge(
        model.reach().ingress("x/a", False).ingress("x/a", True, ports=[81], protocols=["tcp"])
    )


def test_named_port_udp_from_namespace(model: Model) -> None:
    rule = {
        "from": [{"namespaceSelector": sel(ns="y")}],
        "ports": [{"port": "serve-80-udp", "protocol": "UDP"}],
    }
    model.policy("x", "named", {"podSelector": sel(pod="a"), "ingress": [rule]})
    r = (
        model.reach()
        .ingress("x/a", False)
        .expect("y/*", "x/a", True, ports=[80], protocols=["udp"])
    )
    model.converge(r)


def test_named_port_egress(model: Model) -> None:
    spec = {
        "podSelector": sel(pod="a"),
        "policyTypes": ["Egress"],
        "egress": [{"ports": [{"port": "serve-80-tcp"}]}],
    }
    model.policy("x", "named-egress", spec)
    model.converge(
        model.reach().egress("x/a", False).egress("x/a", True, ports=[80], protocols=["tcp"])
    )


def test_updated_policy_is_enforced(model: Model) -> None:
    spec = {"podSelector": sel(pod="a"), "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}
    model.policy("x", "upd", spec)
    model.converge(
        model.reach().ingress("x/a", False).ingress("x/a", True, ports=[81], protocols=["tcp"])
    )
    spec["ingress"] = [{"ports": [{"port": "serve-80-tcp"}]}]
    model.policy("x", "upd", spec)
    model.converge(
        model.reach().ingress("x/a", False).ingress("x/a", True, ports=[80], protocols=["tcp"])
    )


def test_ingress_from_updated_namespace(model: Model) -> None:
    model.policy(
        "x",
        "ns2",
        {
            "podSelector": sel(pod="a"),
            "ingress": [{"from": [{"namespaceSelector": sel(ns2="updated")}]}],
        },
    )
    model.converge(model.reach().ingress("x/a", False))
    model.cluster.label_namespace("y", {"ns2": "updated"})
    model.converge(model.reach().ingress("x/a", False).expect("y/*", "x/a", True))
    model.cluster.label_namespace("y", {"ns2": None})
    model.converge(model.reach().ingress("x/a", False))


def test_ingress_from_updated_pod(model: Model) -> None:
    model.policy(
        "x",
        "client",
        {"podSelector": sel(pod="a"), "ingress": [{"from": [{"podSelector": sel(role="client")}]}]},
    )
    model.converge(model.reach().ingress("x/a", False))
    model.cluster.label_pod("x/b", {"role": "client"})
    model.converge(model.reach().ingress("x/a", False).expect("x/b", "x/a", True))
    model.cluster.label_pod("x/b", {"role": None})
    model.converge(model.reach().ingress("x/a", False))


def test_deny_ingress_from_other_namespaces(model: Model) -> None:
    model.policy("x", "same-ns", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})
    model.converge(model.reach().ingress("x/*", False).expect("x/*", "x/*", True))


def test_deny_ingress_to_updated_pod(model: Model) -> None:
    model.policy("x", "iso", {"podSelector": sel(target="isolated"), "policyTypes": ["Ingress"]})
    model.converge(model.reach())
    model.cluster.label_pod("x/a", {"target": "isolated"})
    model.converge(model.reach().ingress("x/a", False))
    model.cluster.label_pod("x/a", {"target": None})
    model.converge(model.reach())


def test_deny_egress_by_pod_selector(model: Model) -> None:
    model.policy("x", "deny-egress", {"podSelector": sel(pod="a"), "policyTypes": ["Egress"]})
    model.converge(model.reach().egress("x/a", False))


def test_deny_egress_from_all_pods_in_namespace(model: Model) -> None:
    model.policy("x", "deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]})
    model.converge(model.reach().egress("x/*", False))


def test_ingress_and_egress_together(model: Model) -> None:
    spec = {
        "podSelector": sel(pod="a"),
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"podSelector": sel(pod="b")}]}],
        "egress": [{"to": [{"podSelector": sel(pod="b")}]}],
    }
    model.policy("x", "both", spec)
    r = model.reach().ingress("x/a", False).egress("x/a", False)
    model.converge(r.expect("x/b", "x/a", True).expect("x/a", "x/b", True))


def test_client_side_egress_deny_wins_over_server_allow(model: Model) -> None:
    model.policy(
        "x",
        "egress-y",
        {
            "podSelector": sel(pod="a"),
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": sel(ns="y")}]}],
        },
    )
    model.policy(
        "z",
        "allow-x",
        {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": sel(ns="x")}]}]},
    )
    r = model.reach().egress("x/a", False).expect("x/a", "y/*", True)
    r.ingress("z/*", False).expect("x/*", "z/*", True).expect("x/a", "z/*", False)
    model.converge(r)


def test_egress_to_pod_in_other_namespace(model: Model) -> None:
    to = {"namespaceSelector": sel(ns="y"), "podSelector": sel(pod="a")}
    model.policy(
        "x",
        "to-ya",
        {"podSelector": sel(pod="a"), "policyTypes": ["Egress"], "egress": [{"to": [to]}]},
    )
    model.converge(model.reach().egress("x/a", False).expect("x/a", "y/a", True))


def test_any_port_on_one_protocol(model: Model) -> None:
    model.policy(
        "x",
        "tcp-only",
        {"podSelector": sel(pod="a"), "ingress": [{"ports": [{"protocol": "TCP"}]}]},
    )
    model.converge(model.reach().ingress("x/a", False, protocols=["udp"]))


def test_udp_only_policy_does_not_allow_tcp(model: Model) -> None:
    model.policy(
        "x",
        "udp81",
        {"podSelector": sel(pod="a"), "ingress": [{"ports": [{"port": 81, "protocol": "UDP"}]}]},
    )
    model.converge(
        model.reach().ingress("x/a", False).ingress("x/a", True, ports=[81], protocols=["udp"])
    )


def test_allow_all_ingress_takes_precedence(model: Model) -> None:
    model.policy("x", "p81", {"podSelector": sel(pod="a"), "ingress": [{"ports": [{"port": 81}]}]})
    model.converge(
        model.reach().ingress("x/a", False).ingress("x/a", True, ports=[81], protocols=["tcp"])
    )
    model.policy("x", "all", {"podSelector": sel(pod="a"), "ingress": [{}]})
    model.converge(model.reach())


def test_allow_all_egress_takes_precedence(model: Model) -> None:
    model.policy(
        "x",
        "e81",
        {
            "podSelector": sel(pod="a"),
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"port": 81}]}],
        },
    )
    model.converge(
        model.reach().egress("x/a", False).egress("x/a", True, ports=[81], protocols=["tcp"])
    )
    model.policy(
        "x", "all", {"podSelector": sel(pod="a"), "policyTypes": ["Egress"], "egress": [{}]}
    )
    model.converge(model.reach())


def test_deleting_policies_restores_traffic(model: Model) -> None:
    model.policy("x", "deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    model.converge(model.reach().ingress("x/*", False).egress("x/*", False))
    model.cluster.delete_policy("x", "deny")
    model.converge(model.reach())


def test_egress_to_cidr(model: Model) -> None:
    to = {"ipBlock": {"cidr": f"{model.ip('y/b')}/32"}}
    model.policy(
        "x",
        "cidr",
        {"podSelector": sel(pod="a"), "policyTypes": ["Egress"], "egress": [{"to": [to]}]},
    )
    model.converge(model.reach().egress("x/a", False).expect("x/a", "y/b", True))


def test_egress_cidr_except(model: Model) -> None:
    to = {"ipBlock": {"cidr": "198.18.0.0/15", "except": [f"{model.ip('y/b')}/32"]}}
    model.policy(
        "x",
        "cidr",
        {"podSelector": sel(pod="a"), "policyTypes": ["Egress"], "egress": [{"to": [to]}]},
    )
    model.converge(model.reach().expect("x/a", "y/b", False))


def test_ip_in_cidr_and_except_is_allowed_by_another_rule(model: Model) -> None:
    b = f"{model.ip('y/b')}/32"
    egress = [
        {"to": [{"ipBlock": {"cidr": "198.18.0.0/15", "except": [b]}}]},
        {"to": [{"ipBlock": {"cidr": b}}]},
    ]
    model.policy(
        "x", "cidr", {"podSelector": sel(pod="a"), "policyTypes": ["Egress"], "egress": egress}
    )
    model.converge(model.reach())


def test_ingress_from_cidr_except(model: Model) -> None:
    frm = {"ipBlock": {"cidr": "198.18.0.0/16", "except": [f"{model.ip('z/c')}/32"]}}
    model.policy("x", "cidr-in", {"podSelector": sel(pod="a"), "ingress": [{"from": [frm]}]})
    model.converge(model.reach().expect("z/c", "x/a", False))


def test_default_namespace_name_label(model: Model) -> None:
    peer = {"namespaceSelector": sel(**{"kubernetes.io/metadata.name": "y"})}
    model.policy("x", "meta", {"podSelector": sel(pod="a"), "ingress": [{"from": [peer]}]})
    model.converge(model.reach().ingress("x/a", False).expect("y/*", "x/a", True))


def test_end_port_range(model: Model) -> None:
    ports = [{"port": 79, "endPort": 80, "protocol": "TCP"}]
    model.policy("x", "range", {"podSelector": sel(pod="a"), "ingress": [{"ports": ports}]})
    model.converge(
        model.reach().ingress("x/a", False).ingress("x/a", True, ports=[80], protocols=["tcp"])
    )
    ports[0]["endPort"] = 81
    model.policy("x", "range", {"podSelector": sel(pod="a"), "ingress": [{"ports": ports}]})
    model.converge(model.reach().ingress("x/a", False).ingress("x/a", True, protocols=["tcp"]))


def test_policy_in_other_namespace_does_not_select(model: Model) -> None:
    model.policy("y", "deny", {"podSelector": sel(pod="a"), "policyTypes": ["Ingress"]})
    model.converge(model.reach().ingress("y/a", False))


def test_ipv6_default_deny_and_pod_selector(model: Model) -> None:
    model.policy("x", "deny", {"podSelector": {}, "policyTypes": ["Ingress"]})
    model.policy(
        "x",
        "allow-b",
        {"podSelector": sel(pod="a"), "ingress": [{"from": [{"podSelector": sel(pod="b")}]}]},
    )
    r = model.reach().ingress("x/*", False).expect("x/*", "x/*", False).expect("x/b", "x/a", True)
    model.converge(r, family=6)


def test_ipv6_egress_cidr_except(model: Model) -> None:
    to = {"ipBlock": {"cidr": "fd00:198:18::/48", "except": [f"{model.ip('y/b', 6)}/128"]}}
    model.policy(
        "x",
        "cidr6",
        {"podSelector": sel(pod="a"), "policyTypes": ["Egress"], "egress": [{"to": [to]}]},
    )
    model.converge(model.reach().expect("x/a", "y/b", False), family=6)
    # IPv4 is not in the v6 block: all of x/a's IPv4 egress is denied.
    model.converge(model.reach().egress("x/a", False), family=4)
