"""Base chains of others that could undo a pod's egress decision (a chain clearing the deny mark
before the device hook drops): found at a read-back, reported (log, Event, counter), and while
they are there the pod's denied egress is dropped in the output hook itself, where no chain can
undo a drop. When they go, the silent device drop comes back. Against the fake dataplane."""

from __future__ import annotations

from agent.calc import desired as calc_desired
from agent.dataplane import backends
from agent.sync import loop as sync_loop
from tests.support import cluster as fx
from tests.support.syncnode import ALLOW_FROM_CLIENTS, Node, counter

MARK_CLEARER = "inet evil post: filter hook postrouting priority 0"
EGRESS_TOO = {**ALLOW_FROM_CLIENTS, "policyTypes": ["Ingress", "Egress"]}


def egress_isolated() -> Node:
    """A node whose web pods are isolated both ways (an egress drop can happen)."""
    node = Node()
    node.apply(
        fx.event("networkpolicies", "MODIFIED", fx.policy("shop", "from-clients", EGRESS_TOO))
    )
    return node


def render(node: Node, name: str, interfaces: tuple[str, ...]) -> str:
    """The fingerprint of the pod's ruleset rendered for `interfaces`."""
    cluster = calc_desired.Cluster.of(
        pods=node.store.pods.values(),
        namespaces=node.store.namespaces,
        policies=node.store.policies.values(),
        nodes=node.store.nodes.values(),
    )
    rs = calc_desired.desired(node.store.pods[f"shop/{name}"], cluster).ruleset
    return backends.Nftables().render(rs, interfaces).fingerprint


def test_a_foreign_hook_moves_the_egress_drop_into_the_output_hook_and_is_reported() -> None:
    node = egress_isolated()
    node.run()
    silent = render(node, "web-0", ("eth0",))
    assert node.fake("web-0").fingerprint == silent
    reported = counter("podseg_foreign_hooks_total")
    node.dataplane.hook(node.fake("web-0"), MARK_CLEARER)
    node.run(verify=True)
    assert node.state("web-0").foreign == (MARK_CLEARER,)
    assert node.fake("web-0").fingerprint == render(node, "web-0", ()) != silent
    assert counter("podseg_foreign_hooks_total") == reported + 1
    assert ("shop/web-0", "ForeignHook") in node.events.posted
    assert ("shop/web-1", "ForeignHook") not in node.events.posted
    assert node.fake("web-1").fingerprint == render(node, "web-1", ("eth0",))
    node.run(verify=True)  # still there: reported once, nothing rewritten
    assert counter("podseg_foreign_hooks_total") == reported + 1
    node.dataplane.hook(node.fake("web-0"))  # gone
    node.run(verify=True)
    assert node.state("web-0").foreign == ()
    assert node.fake("web-0").fingerprint == silent


def test_a_foreign_hook_present_at_first_contact_is_taken_into_account_at_once() -> None:
    node = egress_isolated()
    node.dataplane.hook(node.dataplane.holding(node.webs[0]), MARK_CLEARER)
    node.run()
    assert (
        node.fake("web-0").fingerprint
        == render(node, "web-0", ())
        != render(node, "web-0", ("eth0",))
    )
    # A restarted agent adopts that ruleset as it is: no rewrite, no gap.
    again = sync_loop.Reconciler(fx.settings(), node.store, node.dataplane, node.events)
    node.dataplane.sent.clear()
    node.rec = again
    node.run()
    assert node.state("web-0").adopted and node.state("web-0").foreign == (MARK_CLEARER,)
    assert node.fake("web-0").fingerprint == render(node, "web-0", ())
