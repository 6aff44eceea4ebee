"""Decoy and contested namespaces, through a real Reconciler against the fake dataplane: a pod
whose addresses also sit in another namespace is programmed in every one of them (reported,
counted), a namespace holding two pods' addresses is locked down, finished pods claim nothing,
and a decoy that appears later is found at resync."""

from __future__ import annotations

import asyncio
from typing import Any

from agent import metrics, store
from agent.dataplane import netns
from agent.sync import loop as sync_loop
from agent.sync import pod as sync_pod
from tests.support import cluster as fx
from tests.support import fake_dataplane

DENY_INGRESS = {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}


class Events:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str, str]] = []  # (pod key, reason, message)

    def on_pod(self, pod: Any, *, reason: str, message: str, event_type: str = "Warning") -> None:
        self.posted.append((pod.key, reason, message))

    def warn(self, **_: Any) -> None:
        pass


class Node:
    """node-1 with pods web-0 (198.18.1.1) and web-1 (198.18.1.2), each in its namespace."""

    def __init__(self, extra_pods: tuple[dict[str, Any], ...] = ()) -> None:
        self.dataplane = fake_dataplane.FakeDataplane()
        self.events = Events()
        self.real = {
            "web-0": self.dataplane.add("198.18.1.1", name="web-0"),
            "web-1": self.dataplane.add("198.18.1.2", name="web-1"),
        }
        self.store = fx.synced_store(
            pods=[
                fx.pod("shop", "web-0", "198.18.1.1", labels={"app": "web"}),
                fx.pod("shop", "web-1", "198.18.1.2", labels={"app": "web"}),
                *extra_pods,
            ],
            namespaces=[fx.namespace("shop")],
            policies=[fx.policy("shop", "deny", DENY_INGRESS)],
            nodes=[fx.node("node-1", "198.18.0.1")],
        )
        self.rec = sync_loop.Reconciler(fx.settings(), self.store, self.dataplane, self.events)

    def run(self, verify: bool = False, change: store.Change | None = None) -> None:
        asyncio.run(self.rec.reconcile(change, verify=verify))

    def state(self, name: str) -> sync_pod.PodState:
        return self.rec.pods[f"shop/{name}"]

    def reasons(self, name: str) -> list[str]:
        return [reason for key, reason, _ in self.events.posted if key == f"shop/{name}"]


def counted(action: str) -> float:
    labels = {"action": action}
    return metrics.REGISTRY.get_sample_value("podseg_extra_namespaces_total", labels) or 0.0


def test_a_decoy_holding_a_pods_address_leaves_the_pod_enforced() -> None:
    before = counted("programmed")
    node = Node()
    decoy = node.dataplane.add("198.18.1.1", name="decoy")
    node.run()
    web0 = node.state("web-0")
    assert web0.state is sync_pod.Status.ENFORCED and len(web0.slots) == 2
    real = node.real["web-0"]
    assert real.fingerprint is not None and real.fingerprint == decoy.fingerprint
    assert "jump ingress_deny" in real.tables and "quarantine" not in real.tables
    assert node.reasons("web-0") == ["SeveralNamespaces"]
    (message,) = [m for key, _, m in node.events.posted if key == "shop/web-0"]
    assert real.path in message and decoy.path in message
    assert counted("programmed") == before + 1
    assert node.state("web-1").state is sync_pod.Status.ENFORCED
    node.run()  # nothing changed: reported once
    assert node.reasons("web-0") == ["SeveralNamespaces"]


def test_a_namespace_holding_two_pods_addresses_is_locked_down() -> None:
    before = counted("locked")
    node = Node()
    # web-0's namespace takes web-1's address too (as a pod with NET_ADMIN could)
    shared = node.real["web-0"]
    shared.interfaces = (netns.Interface("eth0", ("198.18.1.1", "198.18.1.2")),)
    node.run()
    assert "jump quarantine_ingress" in shared.tables  # locked down: neither pod's allows
    assert "quarantine" not in node.real["web-1"].tables  # web-1's own namespace: its rules
    assert node.state("web-1").state is sync_pod.Status.ENFORCED
    assert counted("locked") == before + 1
    assert "Quarantined" not in node.reasons("web-0")  # a lockdown is no quarantine of a pod


def test_a_finished_pod_with_a_reused_address_claims_nothing() -> None:
    done = fx.pod("shop", "job-1", "198.18.1.1")
    done["status"]["phase"] = "Succeeded"
    node = Node(extra_pods=(done,))
    node.run()
    real = node.real["web-0"]
    assert "quarantine" not in real.tables and node.state("web-0").state.value == "enforced"
    assert not node.state("job-1").slots


def test_a_decoy_that_appears_later_is_programmed_at_resync() -> None:
    node = Node()
    node.run()
    decoy = node.dataplane.add("198.18.1.2", name="late-decoy")
    node.run()  # no change, no scan
    assert decoy.fingerprint is None
    node.run(verify=True)  # a resync scans again
    assert decoy.fingerprint == node.real["web-1"].fingerprint is not None
    # The decoy goes away: the pod is placed again, its own namespace untouched.
    decoy.gone = True
    node.run(verify=True)
    assert list(node.state("web-1").slots) == [(node.real["web-1"].path, node.real["web-1"].ino)]
    assert node.state("web-1").state is sync_pod.Status.ENFORCED
