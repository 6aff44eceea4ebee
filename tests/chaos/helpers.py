"""What the chaos tests share: the expected kernel state computed from scratch, the kernel
state read back, continuous probers, and agent kills.

`expected_fingerprints` is the oracle: it LISTs the final API state afresh, builds a store from
it and compiles every local pod exactly as a freshly started agent would; the kernel must hold
those fingerprints. `kernel_tables` reads each pod namespace with `nft` and also checks that
the owned tables are whole (every chain present, the netdev table there when egress needs it).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from typing import Any

from agent import config, store
from agent.calc import compile as calc_compile
from agent.calc import containment
from agent.dataplane.nft import render as render_nft
from agent.k8s import watch
from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import podclient, probe, topology
from tests.support.polling import wait_for

# Agents started by these tests dump their threads' stacks on SIGABRT (see kill_agent).
os.environ.setdefault("PYTHONFAULTHANDLER", "1")

INGRESS_CHAINS = ("input", "ingress_policy", "ingress_deny")
EGRESS_CHAINS = ("output", "egress_policy", "egress_deny")
# Chain groups that are each all there or all absent. The hook chains are shared: `input` also
# serves quarantine, `output` quarantine and the node guard (on by default for every pod).
CHAIN_GROUPS = (
    ("ingress_policy", "ingress_deny"),
    ("egress_policy", "egress_deny"),
    ("node_guard", "node_guard_deny"),
    ("quarantine_ingress", "quarantine_egress"),
)
_CHAIN_RE = re.compile(r"chain (\w+) \{")


def fresh_store(cluster: sandbox_cluster.SandboxCluster, node: str = "node-1") -> store.Store:
    """A store built from fresh LISTs of the emulator (what a new agent starts from)."""
    snapshot = store.Store()
    for resource, list_fn in watch.list_functions(cluster.api_client, node).items():
        body = json.loads(list_fn(_preload_content=False).data)
        relist = watch.Relist(resource, body.get("items") or [], "", time.monotonic())
        snapshot.apply(relist, store.Change())
    return snapshot


def expected_rendered(
    cluster: sandbox_cluster.SandboxCluster, node: str = "node-1"
) -> dict[str, render_nft.Rendered]:
    """Pod key -> what a from-scratch compile of the API state renders, for every pod of
    `node` that exists both in the API (with IPs) and in the sandbox."""
    snapshot = fresh_store(cluster, node)
    index = calc_compile.build_index(snapshot.namespaces, snapshot.pods.values())
    node_obj = getattr(snapshot, "nodes", {}).get(node)
    node_addresses = node_obj.addresses if node_obj is not None else ()
    out: dict[str, render_nft.Rendered] = {}
    for key, pod in snapshot.pods.items():
        sandbox_pod = cluster.pods.get(key)
        if pod.node_name != node or pod.host_network or not pod.ips or sandbox_pod is None:
            continue
        rs = calc_compile.compile_indexed(
            pod, snapshot.policies_in(pod.namespace), index, node_addresses
        )
        rs = containment.contain(  # as the agent does, with its default settings
            rs,
            pod,
            snapshot.namespaces.get(pod.namespace),
            snapshot.nodes.values(),
            config.Settings(node, None).node_guard_ports,
        ).ruleset
        out[key] = render_nft.render(rs, [sandbox_pod.interface])
    return out


def expected_fingerprints(
    cluster: sandbox_cluster.SandboxCluster, node: str = "node-1"
) -> dict[str, str]:
    return {k: r.fingerprint for k, r in expected_rendered(cluster, node).items()}


def chains(text: str) -> tuple[set[str], set[str]]:
    """(inet chains, netdev chains) named in a script or in `nft list` output."""
    inet, _, netdev = text.partition("table netdev podseg {")
    return set(_CHAIN_RE.findall(inet)), set(_CHAIN_RE.findall(netdev))


def nft(netns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, "nft", *args], capture_output=True, text=True, timeout=10
    )


def _table_text(listing: str, family: str) -> str | None:
    """The `table <family> podseg { ... }` block of a `list ruleset` output, if present."""
    match = re.search(rf"^table {family} podseg {{\n.*?^}}$", listing, re.M | re.S)
    return match.group(0) if match else None


def table_state(
    pod: topology.SandboxPod,
) -> tuple[str | None, list[str], tuple[set[str], set[str]]]:
    """(fingerprint or None, problems, chains) of the owned tables in the pod's namespace.

    Whole means: the fingerprint comment is there, each direction's chains are all there or
    all absent, and the netdev table exists exactly when the egress chains do.
    """
    # One `list ruleset` is one consistent snapshot (nft retries its dump if the ruleset
    # generation changes meanwhile); two separate listings could straddle an apply.
    ruleset = nft(pod.netns, "list", "ruleset")
    assert ruleset.returncode == 0, ruleset.stderr
    inet_text = _table_text(ruleset.stdout, "inet")
    netdev_text = _table_text(ruleset.stdout, "netdev")
    if inet_text is None:
        problems = ["netdev table without inet table"] if netdev_text is not None else []
        return None, problems, (set(), set())
    problems: list[str] = []
    fingerprint = render_nft.parse_fingerprint(inet_text)
    if fingerprint is None:
        problems.append("inet table without fingerprint comment")
    found = set(_CHAIN_RE.findall(inet_text))
    for group in CHAIN_GROUPS:
        present = found.intersection(group)
        if present and len(present) != len(group):
            problems.append(f"partial chains {sorted(present)} of {group}")
    if found.intersection(INGRESS_CHAINS[1:]) and "input" not in found:
        problems.append("ingress chains without the input hook")
    if found.intersection(EGRESS_CHAINS[1:]) and "output" not in found:
        problems.append("egress chains without the output hook")
    egress = "output" in found  # an egress drop is possible: the device hook must be there
    if egress != (netdev_text is not None):
        problems.append(f"egress chains={egress} but netdev table={netdev_text is not None}")
    netdev_chains = set(_CHAIN_RE.findall(netdev_text)) if netdev_text is not None else set()
    return fingerprint, problems, (found, netdev_chains)


def kernel_tables(
    cluster: sandbox_cluster.SandboxCluster,
    keys: list[str] | None = None,
    expected: dict[str, render_nft.Rendered] | None = None,
) -> dict[str, str | None]:
    """Pod key -> fingerprint in its namespace (None: no table); fails on a table that is not
    whole, or whose chains differ from the expected script's when it claims its fingerprint."""
    out: dict[str, str | None] = {}
    for key in sorted(keys if keys is not None else cluster.pods):
        fingerprint, problems, found = table_state(cluster.pods[key])
        assert not problems, f"{key}: table not whole: {problems}"
        want = (expected or {}).get(key)
        if want is not None and fingerprint == want.fingerprint:
            assert found == chains(want.script), f"{key}: chains {found} != {chains(want.script)}"
        out[key] = fingerprint
    return out


def converged(cluster: sandbox_cluster.SandboxCluster) -> dict[str, str] | None:
    """The expected fingerprints when the kernel holds exactly them, else None."""
    rendered = expected_rendered(cluster)
    expected = {k: r.fingerprint for k, r in rendered.items()}
    actual = kernel_tables(cluster, list(expected), rendered)
    return expected if actual == expected else None


def mismatches(cluster: sandbox_cluster.SandboxCluster) -> dict[str, tuple[str | None, str]]:
    expected = expected_fingerprints(cluster)
    actual = kernel_tables(cluster, list(expected))
    return {k: (actual[k], v) for k, v in expected.items() if actual[k] != v}


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
