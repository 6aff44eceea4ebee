"""Replaying recorded flows through the agent's calculation: stand-in pods and addresses,
verdicts per mode, candidates replacing policies in force, and which changes break traffic."""

from __future__ import annotations

import ipaddress

from agent.flows import replay
from tests.support import flowgraphs as fg

DB_FROM_CART = {
    "podSelector": {"matchLabels": {"app": "db"}},
    "policyTypes": ["Ingress"],
    "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"app": "cart"}}}], "ports": [{"port": 5432}]}
    ],
}
WORKLOADS = (
    fg.workload("shop", "cart"),
    fg.workload("shop", "db", postgres=5432),
    fg.workload("shop", "web"),
)
FLOWS = (fg.flow("shop/cart", "shop/db", 5432), fg.flow("shop/web", "shop/db", 5432))


def test_verdicts_follow_policies_and_mode() -> None:
    free = replay.world(fg.make(WORKLOADS, FLOWS), ())
    assert [replay.judge(free, f.key) for f in FLOWS] == ["allowed", "allowed"]
    enforced = fg.make(WORKLOADS, FLOWS, [fg.policy("shop", "db", DB_FROM_CART)])
    world = replay.world(enforced, enforced.policies)
    assert [replay.judge(world, f.key) for f in FLOWS] == ["allowed", "dropped"]
    visible = fg.make(
        WORKLOADS, FLOWS, [fg.policy("shop", "db", DB_FROM_CART)], modes={"shop": "visibility"}
    )
    world = replay.world(visible, visible.policies)
    assert [replay.judge(world, f.key) for f in FLOWS] == ["allowed", "would-drop"]


def test_named_ports_resolve_against_the_stand_in_pods() -> None:
    by_name = dict(DB_FROM_CART, ingress=[{"ports": [{"port": "postgres"}]}])
    doc = fg.make(WORKLOADS, FLOWS, [fg.policy("shop", "db", by_name)])
    world = replay.world(doc, doc.policies)
    assert [replay.judge(world, f.key) for f in FLOWS] == ["allowed", "allowed"]
    wrong = fg.flow("shop/web", "shop/db", 5433)
    assert replay.judge(world, wrong.key) == "dropped"


def test_the_shop_example_agrees_with_the_calculation() -> None:
    doc = fg.shop()
    world = replay.world(doc, doc.policies)
    judged = {f.key: replay.judge(world, f.key) for f in doc.flows}
    assert judged == {f.key: f.key.verdict for f in doc.flows}
    assert {v for v in judged.values()} == {"allowed", "dropped", "would-drop"}


def test_a_candidate_with_the_same_name_replaces_the_policy_in_force() -> None:
    doc = fg.make(WORKLOADS, FLOWS, [fg.policy("shop", "db", DB_FROM_CART)])
    opened = fg.policy("shop", "db", dict(DB_FROM_CART, ingress=[{}]))
    changes = replay.replay(doc, [opened])
    assert [(c.flow.key.src.workload, c.before, c.after, c.breaks) for c in changes] == [
        ("web", "dropped", "allowed", False)
    ]
    assert replay.with_candidates(doc.policies, [opened]) == (opened,)


def test_breaking_changes_are_flagged() -> None:
    doc = fg.make(WORKLOADS, FLOWS, modes={"shop": "visibility"})
    deny = fg.policy("shop", "deny", {"podSelector": {}, "policyTypes": ["Ingress"]})
    changes = replay.replay(doc, [deny])
    assert [(c.before, c.after, c.breaks) for c in changes] == [
        ("allowed", "would-drop", True),
        ("allowed", "would-drop", True),
    ]
    enforced = fg.make(WORKLOADS, FLOWS)
    assert [(c.after, c.breaks) for c in replay.replay(enforced, [deny])] == [
        ("dropped", True),
        ("dropped", True),
    ]
    assert (
        replay.replay(enforced, [fg.policy("shop", "db", DB_FROM_CART | {"ingress": [{}]})]) == ()
    )


def test_stand_in_addresses_avoid_the_external_networks() -> None:
    flows = (fg.flow("198.18.0.0/24", "shop/db", 5432), fg.flow("shop/cart", "shop/db", 5432))
    allow = dict(
        DB_FROM_CART,
        ingress=[{"from": [{"ipBlock": {"cidr": "198.18.0.0/24"}}]}],
    )
    doc = fg.make(WORKLOADS, flows, [fg.policy("shop", "db", allow)])
    world = replay.world(doc, doc.policies)
    addresses = [ipaddress.ip_address(p.ips[0]) for p in world.pods.values()]
    assert not any(a in ipaddress.ip_network("198.18.0.0/24") for a in addresses)
    assert [replay.judge(world, f.key) for f in flows] == ["allowed", "dropped"]


def test_protocols_without_ports_are_not_judged() -> None:
    doc = fg.make(WORKLOADS, [fg.flow("shop/web", "shop/db", None, proto="ICMP")])
    assert replay.judge(replay.world(doc, ()), doc.flows[0].key) is None


def test_unjudged_flows_are_counted() -> None:
    flows = (
        fg.flow("shop/web", "shop/db", None, proto="ICMP"),
        fg.flow("shop/ghost", "shop/db", 5432),
        fg.flow("shop/cart", "shop/db", 5432),
    )
    doc = fg.make(WORKLOADS, flows)
    assert replay.unjudged(doc) == flows[:2]
