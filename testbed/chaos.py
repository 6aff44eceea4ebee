"""Chaos for a sandbox cluster: random pod, label, namespace and policy changes and pod
deletions against a real agent that is killed (SIGTERM, or kill -9 of agent and worker in
random order) at random moments, also during start-up. After every kill, before the restart,
every pod's tables must be whole (atomic applies); a deny prober runs all along; at the end the
kernel must equal a from-scratch compile of the final API state and the tables of deleted pods
must be swept. tests/chaos runs it at CI size, scripts/chaos.py at full size.

Also the parts the chaos tests share: a continuous prober, and killing an agent with its worker.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import kubernetes.client

from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import podclient, probe, tables, topology

# Agents started here dump their threads' stacks on SIGABRT (see kill_agent).
os.environ.setdefault("PYTHONFAULTHANDLER", "1")

T = TypeVar("T")


def wait_for(check: Callable[[], T], *, timeout: float = 10.0, what: str = "") -> T:
    """Poll `check` until it returns something truthy; an AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    last = check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: {last!r}")
        time.sleep(0.05)
        last = check()
    return last


class Prober(threading.Thread):
    """Probes src -> dst:port back to back (TCP, then UDP) until stopped; keeps every verdict."""

    def __init__(
        self,
        src: topology.SandboxPod,
        dst: topology.SandboxPod,
        port: int = 80,
        timeout: float = 0.3,
    ) -> None:
        super().__init__(name=f"prober-{src.key}-{dst.key}", daemon=True)
        self.src, self.dst, self.port, self.timeout = src, dst, port, timeout
        self.verdicts: list[tuple[float, str, str]] = []  # (started, proto, verdict)
        self._stop_event = threading.Event()

    def run(self) -> None:
        protos = ("tcp", "udp")
        i = 0
        while not self._stop_event.is_set():
            proto = protos[i % 2]
            i += 1
            started = time.monotonic()
            try:
                verdict = probe.probe(self.src, self.dst.ipv4, self.port, proto, self.timeout)
            except podclient.PodProcessError as exc:
                verdict = f"error:{exc}"
            self.verdicts.append((started, proto, verdict))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)

    def count(self, verdict: str) -> int:
        return sum(1 for _, _, v in self.verdicts if v == verdict)

    def longest_gap(self) -> float:
        """Longest time from a failed probe's start to the next successful probe's start."""
        longest, first_bad = 0.0, None
        for started, _, verdict in self.verdicts:
            if verdict != probe.OK:
                first_bad = started if first_bad is None else first_bad
            elif first_bad is not None:
                longest, first_bad = max(longest, started - first_bad), None
        return longest


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def kill_agent(
    agent: sandbox_cluster.AgentProcess, how: str, rnd: random.Random | None = None
) -> int | None:
    """Stop the agent: "term" (SIGTERM, clean) or "kill" (SIGKILL of the worker child and the
    agent, in random order). Returns the exit code; waits until its worker is gone too."""
    popen: Any = agent._popen  # the test needs the real process to kill it
    assert popen is not None
    workers = children(popen.pid)
    if how == "term":
        popen.send_signal(signal.SIGTERM)
        try:
            code = popen.wait(15)  # the DaemonSet's terminationGracePeriodSeconds
        except subprocess.TimeoutExpired as exc:
            popen.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: dump every thread's stack
            popen.wait(15)
            if agent._reader is not None:
                agent._reader.join(5)
            tail = "".join(agent.raw[-80:])
            raise AssertionError(
                f"agent ignored SIGTERM for 15 s; its last output:\n{tail}"
            ) from exc
    else:
        victims = [popen.pid, *workers]
        if rnd is not None:
            rnd.shuffle(victims)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        code = popen.wait(15)
    wait_for(
        lambda: not any(alive(pid) for pid in workers),
        timeout=15,
        what=f"worker {workers} to exit after its agent",
    )
    return int(code)


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
        out: list[dict[str, Any]] = []
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
        kill_agent(agent, how, self.rnd)
        self.stats.kills[how] += 1
        # Whatever moment the kill hit, no pod may hold half a ruleset.
        tables.kernel_tables(self.cluster)
        self.stats.whole_checks += len(self.cluster.pods)
        for _ in range(self.rnd.randint(0, 5)):  # changes nobody watches
            before = sum(self.stats.events.values())
            self.event()
            self.stats.while_down += sum(self.stats.events.values()) - before
        # Sometimes kill again during start-up, while the agent adopts and applies.
        self.cluster.start_agent("node-1", wait=self.rnd.random() < 0.5)

    def run(self, events: int, kill_every: int) -> Stats:
        cl = self.cluster
        deny = Prober(cl.pods["c1/p0"], cl.pods["vault/secret"])
        wait_for(lambda: tables.converged(cl), timeout=30, what="initial rules")
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
                lambda: tables.converged(cl),
                timeout=60,
                what=f"kernel == from-scratch compile: {tables.mismatches(cl)}",
            )
            leftovers = sorted(self.deleted)
            wait_for(
                lambda: all(tables.table_state(cl.pods[k])[0] is None for k in leftovers),
                timeout=30,
                what=f"tables of deleted pods {leftovers} swept",
            )
            self.stats.swept_at_end = len(leftovers)
        finally:
            deny.stop()
        self.stats.deny_probes = len(deny.verdicts)
        self.stats.deny_got_through = deny.count(probe.OK)
        return self.stats
