"""A node's sync layer without root, for the unit tests of tests/unit/sync: one agent (node-1)
with web pods and a remote client pod, a real store and Reconciler over the in-memory fake
dataplane (tests/support/fake_dataplane.py), and Events kept in memory."""

from __future__ import annotations

import asyncio
from typing import Any

from agent import metrics, store
from agent.calc import desired as calc_desired
from agent.dataplane import backends
from agent.sync import loop as sync_loop
from agent.sync import placement
from agent.sync import pod as sync_pod
from tests.support import cluster as fx
from tests.support import fake_dataplane

ALLOW_FROM_CLIENTS = {
    "podSelector": {"matchLabels": {"app": "web"}},
    "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}],
}


class Events:
    """A recorder keeping Events in memory (`agent.sync.report.Recorder`)."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, str]] = []  # (object key, reason)

    def on_pod(self, pod: Any, *, reason: str, message: str, event_type: str = "Warning") -> None:
        self.posted.append((pod.key, reason))

    def warn(self, *, namespace: str, name: str, reason: str, **_: Any) -> None:
        self.posted.append((f"{namespace}/{name}", reason))

    def reasons(self) -> list[str]:
        return [reason for _, reason in self.posted]


class Node:
    """One agent (node-1) with web pods, a remote client pod, and the fake dataplane."""

    def __init__(self, webs: int = 2, **settings: Any) -> None:
        self.dataplane = fake_dataplane.FakeDataplane()
        self.events = Events()
        self.webs = [f"198.18.1.{i + 1}" for i in range(webs)]
        pods = [
            fx.pod("shop", f"web-{i}", ip, labels={"app": "web"}) for i, ip in enumerate(self.webs)
        ]
        pods.append(
            fx.pod("shop", "client", "198.18.2.1", node="node-2", labels={"role": "client"})
        )
        for ip in self.webs:
            self.dataplane.add(ip)
        # What the API server lists (as raw objects), for a second agent to start from.
        self.lists: dict[str, list[Any]] = {
            "nodes": [fx.node("node-1", "198.18.0.1")],
            "namespaces": [fx.namespace("shop")],
            "pods": pods,
            "networkpolicies": [fx.policy("shop", "from-clients", ALLOW_FROM_CLIENTS)],
        }
        self.store = fx.synced_store(
            pods=pods,
            namespaces=self.lists["namespaces"],
            policies=self.lists["networkpolicies"],
            nodes=self.lists["nodes"],
        )
        self.rec = sync_loop.Reconciler(
            fx.settings(**settings), self.store, self.dataplane, self.events
        )

    def run(self, change: store.Change | None = None, verify: bool = False) -> None:
        asyncio.run(self.rec.reconcile(change, verify=verify))

    def apply(self, *events: Any) -> store.Change:
        change = store.Change()
        for item in events:
            self.store.apply(item, change)
        return change

    def rendered(self) -> list[str]:
        """The pods whose ruleset the passes render from now on (filled as they do)."""
        names: list[str] = []
        derive = self.rec.backend.derive

        def counting(old_rs: Any, old: Any, rs: Any, interfaces: Any) -> Any:
            names.append(rs.pod)
            return derive(old_rs, old, rs, interfaces)

        self.rec.backend.derive = counting  # type: ignore[method-assign]
        return names

    def state(self, name: str) -> sync_pod.PodState:
        return self.rec.pods[f"shop/{name}"]

    def slot(self, name: str) -> sync_pod.Slot:
        """The pod's first (here: only) namespace and what the agent knows of it."""
        return next(iter(self.state(name).slots.values()))

    def fake(self, name: str) -> fake_dataplane.FakeNetns:
        return self.dataplane.holding(self.store.pods[f"shop/{name}"].ips[0])

    def desired(self, name: str) -> str:
        """The fingerprint the pod's namespace must hold (the pure calculation)."""
        cluster = calc_desired.Cluster.of(
            pods=self.store.pods.values(),
            namespaces=self.store.namespaces,
            policies=self.store.policies.values(),
            nodes=self.store.nodes.values(),
        )
        pod = self.store.pods[f"shop/{name}"]
        slot = self.slot(name)
        link = placement.link_of(slot.target)
        rs = calc_desired.desired(pod, cluster, link, lockdown=slot.lockdown).ruleset
        return backends.Nftables().render(rs, sync_pod.interfaces(slot)).fingerprint


def counter(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0
