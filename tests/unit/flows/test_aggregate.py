"""Drop aggregation: a flow is keyed on its 5-tuple per pod and reason, addresses outside the
cluster fold into their /24 or /64, and flows past the cap are counted, not kept."""

from __future__ import annotations

import pytest

from agent.calc import ruleset
from agent.dataplane.nft import render as render_nft
from agent.flows import aggregate, nflog

PREFIX = "podseg ingress policy enforce"


def test_aggregation_keys_on_flow_and_folds_unknown_addresses() -> None:
    agg = aggregate.Aggregator(max_flows=2)
    pods = {"198.18.1.2", "198.18.1.3"}.__contains__
    for sport in range(10):  # a storm of attempts from one peer to one port: one flow
        p = nflog.Packet(PREFIX, "198.18.1.2", "198.18.1.3", 6, 40000 + sport, 80)
        assert agg.add("x/b", p, float(sport), pods)
    for last in (5, 6):  # two external hosts of one /24: one folded flow
        p = nflog.Packet(PREFIX, f"203.0.113.{last}", "198.18.1.3", 6, 1, 80)
        agg.add("x/b", p, 1.0, pods)
    p = nflog.Packet(PREFIX, "198.18.1.2", "198.18.1.3", 6, 1, 443)
    agg.add("x/b", p, 1.0, pods)  # a third flow: over the cap, counted
    assert not agg.add("x/b", nflog.Packet("other", "1.1.1.1", "2.2.2.2", 6, 1, 2), 1.0, pods)
    flows = dict(agg.flush())
    assert agg.overflow == 1 and agg.foreign == 1 and agg.flush() == []
    pod_flow = aggregate.FlowKey(
        "x/b", "ingress", "policy", "enforce", "198.18.1.2", "198.18.1.3", 6, 80
    )
    assert flows[pod_flow].packets == 10 and flows[pod_flow].first == 0.0
    assert flows[pod_flow].last == 9.0
    assert any(k.src == "203.0.113.0/24" and v.packets == 2 for k, v in flows.items())
    assert aggregate.fold("2001:db8:1:2:3::9", pods) == "2001:db8:1:2::/64"


@pytest.mark.parametrize(
    "prefix",
    [
        "podseg ingress policy enforce-x",
        "podseg sideways policy enforce",
        "podseg egress because-i-said-so enforce",
        "podseg egress policy enforce extra",
        "other ingress policy enforce",
    ],
)
def test_a_prefix_outside_podsegs_vocabulary_never_becomes_a_label(prefix: str) -> None:
    assert render_nft.parse_log_prefix(prefix) is None
    assert render_nft.parse_counter_name(prefix.replace(" ", ".").replace("podseg", "deny")) is None
    agg = aggregate.Aggregator()
    packet = nflog.Packet(prefix, "198.18.0.1", "198.18.0.2", 6, 1000, 80)
    assert not agg.add("x/a", packet, 0.0, lambda ip: False)
    assert agg.foreign == 1 and not agg.flows


def test_podsegs_own_prefixes_and_counters_parse() -> None:
    for direction in ruleset.Direction:
        for reason in render_nft.DROP_REASONS:
            for mode in ruleset.PolicyMode:
                prefix = render_nft.log_prefix(direction, reason, mode)
                assert render_nft.parse_log_prefix(prefix) == (direction.value, reason, mode.value)
                name = render_nft.counter_name(direction, reason, mode)
                assert render_nft.parse_counter_name(name) == (direction.value, reason, mode.value)
