"""The sync loop and the node's own addresses (the worker's namespace, read at each full scan):
a new pod placed by the scan brings its host-side veth, whose IPv6 link-local address is no
address of the node to others (`agent.calc.desired.with_host_addresses` leaves it out), so it
must re-plan no other pod; an address that is the node's does re-plan every local pod."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import Any

import structlog

from agent.dataplane import protocol
from agent.sync import loop as sync_loop
from tests.support import cluster as fx
from tests.support.syncnode import Node

NODE_IP = "198.18.0.1"  # node-1's InternalIP in tests.support.syncnode
NEW_NODE_IP = int(ipaddress.ip_address("198.18.0.77"))  # as the ruleset's ranges hold it


def _new_pod(node: Node, name: str, ip: str, host: tuple[str, ...]) -> list[dict[str, Any]]:
    """A new local pod with its IP in the API (no podseg-cni: the full scan places it) while
    the node's namespace gains `host`; the pass's log lines."""
    node.dataplane.add(ip)
    node.dataplane.host = host
    change = node.apply(fx.event("pods", "ADDED", fx.pod("shop", name, ip)))
    with structlog.testing.capture_logs() as logs:
        asyncio.run(node.rec.reconcile(change, since=time.monotonic(), kind="pod_ip"))
    return [e for e in logs if e["event"] == "reconcile_committed"]


def _restarted(node: Node) -> Node:
    """A second agent on the same namespaces (it adopts every table the first committed)."""
    after = Node(webs=len(node.webs))
    after.dataplane = node.dataplane
    after.rec = sync_loop.Reconciler(fx.settings(), after.store, after.dataplane, after.events)
    after.run()
    return after


def test_a_new_pods_link_local_veth_address_on_the_node_replans_no_other_pod() -> None:
    first = Node(webs=4)
    first.dataplane.host = (NODE_IP, "fe80::1")
    first.run()
    node = _restarted(first)
    rendered = node.rendered()
    for i in range(3):
        node.dataplane.sent.clear()
        host = (NODE_IP, "fe80::1", *(f"fe80::a:{n}" for n in range(i + 1)))
        (line,) = _new_pod(node, f"new{i}", f"198.18.1.{50 + i}", host)
        assert rendered == [f"new{i}"], rendered
        assert line["recompiled"] == 1 and line["pods"] == 1, line
        assert node.dataplane.ops().count(protocol.Op.COMMIT) == 1
        rendered.clear()


def test_a_new_address_of_the_node_replans_every_local_pod() -> None:
    node = Node(webs=3)
    node.dataplane.host = (NODE_IP,)
    node.run()
    rendered = node.rendered()
    (line,) = _new_pod(node, "new", "198.18.1.50", (NODE_IP, "198.18.0.77"))
    # an ingress-isolated pod admits its own node: the new address too
    assert sorted(set(rendered)) == ["new", "web-0", "web-1", "web-2"], rendered
    for name in ("web-0", "web-1", "web-2"):
        assert f"first={NEW_NODE_IP}," in repr(node.state(name).ruleset), name
        assert node.fake(name).fingerprint == node.slot(name).fingerprint, name
    assert line["recompiled"] >= 4, line
