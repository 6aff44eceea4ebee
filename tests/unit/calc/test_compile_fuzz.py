"""Fuzzed NetworkPolicies (hypothesis): random valid and invalid specs never crash convert,
compile or render, and an entry that is invalid never allows anything (fail closed)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import model
from agent.calc import compile as calc_compile
from agent.dataplane.nft import render as render_nft
from agent.k8s import convert, watch
from tests.support.strategies import (
    NAMESPACES,
    POD_NAMES,
    SETTINGS,
    feed,
    pod_obj,
    policy_obj,
    selectors,
    valid_peers,
    valid_ports,
)

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(("TCP", "UDP", "SCTP", "tcp", "80", "http", "10.0.0.0/8", "::/0", "1.2.3.4")),
)
json_any = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=12,
)


def garbage_or(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, json_any)


@st.composite
def fuzzed_specs(draw: st.DrawFn) -> Any:
    """Specs whose every part is either well-formed or arbitrary JSON."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_any)
    spec: dict[str, Any] = {"podSelector": draw(garbage_or(selectors()))}
    for direction, peer_key in (("ingress", "from"), ("egress", "to")):
        spec[direction] = draw(
            garbage_or(
                st.lists(
                    garbage_or(
                        st.fixed_dictionaries(
                            {
                                peer_key: garbage_or(st.lists(garbage_or(valid_peers()))),
                                "ports": garbage_or(st.lists(garbage_or(valid_ports()))),
                            }
                        )
                    ),
                    max_size=3,
                )
            )
        )
    spec["policyTypes"] = draw(garbage_or(st.lists(st.sampled_from(("Ingress", "Egress")))))
    return spec


PEERS = [
    convert.pod(pod_obj(ns, name, {"app": "web", "tier": "db"}))
    for ns in NAMESPACES
    for name in POD_NAMES[:2]
]
PEER_NAMESPACES = {ns: model.Namespace(ns, {"example.com/team": "one"}) for ns in NAMESPACES}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=fuzzed_specs())
def test_random_policies_never_crash_convert_compile_or_render(spec: Any) -> None:
    policy = convert.network_policy(policy_obj("x", "fuzz", spec))
    assert isinstance(policy, model.NetworkPolicy)
    snapshot = feed(
        [
            watch.Relist("networkpolicies", [policy_obj("x", "fuzz", spec)], "", 0.0),
            watch.Relist("pods", [pod_obj("x", "a", {"app": "web"})], "", 0.0),
        ]
    )
    assert list(snapshot.policies.values()) == [policy]
    index = calc_compile.build_index(PEER_NAMESPACES, PEERS)
    for pod in PEERS[:2]:
        rs = calc_compile.compile_indexed(pod, [policy], index)
        rendered = render_nft.render(rs, ["eth0"])
        assert render_nft.parse_fingerprint(rendered.script) == rendered.fingerprint


invalid_peers = st.one_of(
    st.just({}),
    st.builds(lambda c: {"ipBlock": {"cidr": c}}, st.sampled_from(("bad", "10.0.0.0/33", ""))),
    st.just({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}),
    st.just({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}),
    st.just({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}),
    json_leaf,
)
invalid_ports = st.one_of(
    st.builds(lambda p: {"port": p}, st.sampled_from((0, 70000, -1, True, 1.5, "no--pe", ""))),
    st.just({"protocol": "ICMP", "port": 80}),
    st.just({"port": 90, "endPort": 80}),
    st.just({"port": "http", "endPort": 90}),
    json_leaf,
)


@SETTINGS
@given(peers=st.lists(invalid_peers, min_size=1, max_size=3), bad_port=invalid_ports)
def test_invalid_entries_allow_nothing(peers: list[Any], bad_port: Any) -> None:
    """A rule whose every peer (or every port) is invalid allows nothing at all."""
    target = PEERS[0]
    for rule in ({"from": peers}, {"ports": [bad_port]}):
        spec = {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [rule]}
        policy = convert.network_policy(policy_obj("x", "broken", spec))
        # (convert may not flag every name the API rejects, e.g. "no--pe"; such a name can
        # never match a container port the API accepted, so the safety property below holds)
        index = calc_compile.build_index(PEER_NAMESPACES, PEERS)
        rs = calc_compile.compile_indexed(target, [policy], index)
        assert rs.ingress.isolated
        assert rs.ingress.any_port_peers == () and rs.ingress.port_peers == (), spec
