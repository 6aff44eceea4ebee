"""The chaos run shared by tests/chaos/test_chaos.py (small count, CI) and scripts/chaos.py
(the full 1000): random pod, label, namespace and policy changes and pod deletions against a
real agent that is killed (SIGTERM or kill -9 of agent and worker, in random order) at random
moments, also during start-up. After every kill, before the restart, every pod's tables must
be whole (atomic applies); a deny prober runs all along; at the end the kernel must equal a
from-scratch compile of the final API state and tables of deleted pods must be swept.
"""

from __future__ import annotations

import collections
import dataclasses
import random
from typing import Any

import kubernetes.client

from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import probe
from tests.chaos import helpers
from tests.support.polling import wait_for

NAMESPACES = ("c1", "c2")
PODS = ("p0", "p1", "p2", "p3")
ROLES = ("web", "api", "db", None)
TEAMS = ("a", "b", None)
POLICIES = tuple(f"pol{i}" for i in range(5))


@dataclasses.dataclass
class Stats:
    events: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    kills: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    whole_checks: int = 0
    while_down: int = 0  # events the agent could only learn from its relist after a restart
    deny_probes: int = 0
    deny_got_through: int = 0
    swept_at_end: int = 0

    def line(self) -> str:
        return (
            f"events={sum(self.events.values())} {dict(sorted(self.events.items()))} "
            f"made_while_agent_down={self.while_down} "
            f"kills={dict(self.kills)} restarts={sum(self.kills.values())} "
            f"tables_checked_whole_after_kills={self.whole_checks} "
            f"deny_probes={self.deny_probes} deny_got_through={self.deny_got_through} "
            f"leftovers_swept_at_end={self.swept_at_end}"
        )


def build(cluster: sandbox_cluster.SandboxCluster) -> None:
    for ns in NAMESPACES:
        cluster.ensure_namespace(ns, {"team": "a"})
        for name in PODS:
            cluster.add_pod(ns, name, {"role": "web"})
    cluster.ensure_namespace("vault", {"team": "vault"})
    cluster.add_pod("vault", "secret", {"role": "secret"})
    cluster.apply_policy(
        {
            "metadata": {"namespace": "vault", "name": "deny-all"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        }
    )


def _selector(rnd: random.Random, key: str, values: tuple[str | None, ...]) -> dict[str, Any]:
    value = rnd.choice([v for v in values if v])
    return rnd.choice(
        [
            {},
            {"matchLabels": {key: value}},
            {"matchExpressions": [{"key": key, "operator": "NotIn", "values": [value]}]},
        ]
    )


def random_policy(rnd: random.Random) -> dict[str, Any]:
    def rules(peer_key: str) -> list[dict[str, Any]]:
        out = []
        for _ in range(rnd.randint(0, 2)):
            peer: dict[str, Any] = {}
            if rnd.random() < 0.7:
                peer["podSelector"] = _selector(rnd, "role", ROLES)
            if rnd.random() < 0.4 or not peer:
                peer["namespaceSelector"] = _selector(rnd, "team", TEAMS)
            rule: dict[str, Any] = {peer_key: [peer]}
            if rnd.random() < 0.5:
                rule["ports"] = [{"port": rnd.choice([80, 81, "serve-80-tcp"])}]
            out.append(rule)
        return out

    spec: dict[str, Any] = {
        "podSelector": _selector(rnd, "role", ROLES),
        "policyTypes": rnd.choice([["Ingress"], ["Egress"], ["Ingress", "Egress"]]),
    }
    if "Ingress" in spec["policyTypes"]:
        spec["ingress"] = rules("from")
    if "Egress" in spec["policyTypes"]:
        spec["egress"] = rules("to")
    return spec


def create_pod_object(
    cluster: sandbox_cluster.SandboxCluster, key: str, labels: dict[str, str]
) -> None:
    """The Pod object of an existing sandbox pod, as the kubelet would report it."""
    ns, name = key.split("/")
    pod = cluster.pods[key]
    cluster.core.create_namespaced_pod(
        ns,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "nodeName": "node-1",
                "containers": [
                    {"name": "c", "image": "x", "ports": sandbox_cluster.container_ports()}
                ],
            },
        },
    )
    ips = [pod.ipv4] + ([pod.ipv6] if pod.ipv6 else [])
    cluster.core.patch_namespaced_pod_status(
        name, ns, {"status": {"podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips]}}
    )


class Chaos:
    def __init__(self, cluster: sandbox_cluster.SandboxCluster, seed: int) -> None:
        self.cluster = cluster
        self.rnd = random.Random(seed)
        self.stats = Stats()
        self.deleted: set[str] = set()
        self.policies: set[tuple[str, str]] = set()

    def event(self) -> None:
        rnd, cl = self.rnd, self.cluster
        kind = rnd.choices(
            ["relabel", "ns_label", "policy", "policy_delete", "pod_delete", "pod_create"],
            weights=[30, 10, 30, 10, 10, 10],
        )[0]
        key = f"{rnd.choice(NAMESPACES)}/{rnd.choice(PODS)}"
        ns, name = key.split("/")
        try:
            if kind == "relabel" and key not in self.deleted:
                cl.label_pod(key, {"role": rnd.choice(ROLES)})
            elif kind == "ns_label":
                cl.label_namespace(ns, {"team": rnd.choice(TEAMS)})
            elif kind == "policy":
                policy = rnd.choice(POLICIES)
                cl.apply_policy(
                    {"metadata": {"namespace": ns, "name": policy}, "spec": random_policy(rnd)}
                )
                self.policies.add((ns, policy))
            elif kind == "policy_delete" and self.policies:
                ns, policy = rnd.choice(sorted(self.policies))
                cl.delete_policy(ns, policy)
                self.policies.discard((ns, policy))
            elif kind == "pod_delete" and key not in self.deleted:
                cl.core.delete_namespaced_pod(name, ns)
                self.deleted.add(key)
            elif kind == "pod_create" and key in self.deleted:
                create_pod_object(cl, key, {"role": rnd.choice(["web", "api", "db"])})
                self.deleted.discard(key)
            else:
                return
        except kubernetes.client.exceptions.ApiException as exc:
            raise AssertionError(f"chaos event {kind} on {key} failed: {exc}") from exc
        self.stats.events[kind] += 1

    def kill_and_restart(self) -> None:
        agent = self.cluster.agents["node-1"]
        how = self.rnd.choice(["term", "kill", "kill"])
        helpers.kill_agent(agent, how, self.rnd)
        self.stats.kills[how] += 1
        # Whatever moment the kill hit, no pod may hold half a ruleset.
        helpers.kernel_tables(self.cluster)
        self.stats.whole_checks += len(self.cluster.pods)
        for _ in range(self.rnd.randint(0, 5)):  # changes nobody watches
            before = sum(self.stats.events.values())
            self.event()
            self.stats.while_down += sum(self.stats.events.values()) - before
        # Sometimes kill again during start-up, while the agent adopts and applies.
        self.cluster.start_agent("node-1", wait=self.rnd.random() < 0.5)

    def run(self, events: int, kill_every: int) -> Stats:
        cl = self.cluster
        deny = helpers.Prober(cl.pods["c1/p0"], cl.pods["vault/secret"])
        wait_for(lambda: helpers.converged(cl), timeout=30, what="initial rules")
        deny.start()
        try:
            for _ in range(events * 3):  # draws that change nothing do not count
                if sum(self.stats.events.values()) >= events:
                    break
                self.event()
                if self.rnd.randrange(kill_every) == 0:
                    self.kill_and_restart()
            agent = cl.agents["node-1"]
            if not agent.running:
                cl.start_agent("node-1")
            wait_for(agent.ready, timeout=30, what="agent ready at the end")
            wait_for(
                lambda: helpers.converged(cl),
                timeout=60,
                what=f"kernel == from-scratch compile: {helpers.mismatches(cl)}",
            )
            leftovers = sorted(self.deleted)
            wait_for(
                lambda: all(helpers.table_state(cl.pods[k])[0] is None for k in leftovers),
                timeout=30,
                what=f"tables of deleted pods {leftovers} swept",
            )
            self.stats.swept_at_end = len(leftovers)
        finally:
            deny.stop()
        self.stats.deny_probes = len(deny.verdicts)
        self.stats.deny_got_through = deny.count(probe.OK)
        return self.stats
