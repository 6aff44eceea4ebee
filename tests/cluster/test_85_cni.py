"""podseg-cni on the real cluster (docs/cni.md): the DaemonSet's init container chains the plugin
into the node's conflist (`/etc/cni/net.d`, `/opt/cni/bin` of the node), and containerd runs it
after the CNI bridge for every new pod.

Each client pod's init container is its first instruction: it tries a peer its egress policy
denies and a peer it allows, one after the other, a few times, and prints one line per attempt
(`denied OPEN`, `allowed CLOSED`, ...). Counting them proves what the pod could do before any
container of it ever ran. The agent is stopped by a nodeSelector no node has (the DaemonSet
keeps its pods off the node, its rules stay in the kernel) and started again by removing it.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster import support
from tests.cluster.support import expect

CONFLIST = support.NODE_CONFLIST
STOPPED = "podseg.io/test-agent-stopped"  # a node label no node has
PENDING = "table inet podseg-pending"
OWN = "table inet podseg"
ATTEMPTS = (
    "i=0; while [ $i -lt {n} ]; do "
    "for peer in denied:{denied} allowed:{allowed}; do "
    "if /agnhost connect --timeout=1s ${{peer#*:}}:80 >/dev/null 2>&1; "
    'then echo "${{peer%%:*}} OPEN"; else echo "${{peer%%:*}} CLOSED"; fi; '
    "done; i=$((i+1)); done"
)


# -- the node's CNI configuration --------------------------------------------------------------


def _plugins(config: support.Config) -> list[dict[str, Any]]:
    text = support.node_file(config, CONFLIST)
    assert text is not None, f"no {CONFLIST} in the node"
    plugins: list[dict[str, Any]] = json.loads(text)["plugins"]
    return plugins


def _ours(config: support.Config) -> dict[str, Any] | None:
    found = [p for p in _plugins(config) if p.get("type") == "podseg-cni"]
    return found[0] if found else None


# -- the agent: stop, start, configure ---------------------------------------------------------


def _daemonset(kube: support.Kube) -> dict[str, Any]:
    ds: dict[str, Any] = kube.json("-n", support.PODSEG_NS, "get", "daemonset/podseg-agent")
    return ds


def _patch(kube: support.Kube, ops: list[dict[str, Any]]) -> None:
    kube.run(
        "-n", support.PODSEG_NS, "patch", "daemonset/podseg-agent", "--type=json",
        "-p", json.dumps(ops),
    )  # fmt: skip


def _rolled_out(kube: support.Kube) -> None:
    kube.run(
        "-n", support.PODSEG_NS, "rollout", "status", "daemonset/podseg-agent", "--timeout=180s"
    )


def _stop_agent(kube: support.Kube) -> None:
    path = "/spec/template/spec/nodeSelector/" + STOPPED.replace("/", "~1")
    _patch(kube, [{"op": "add", "path": path, "value": "yes"}])
    support.wait_until(
        lambda: support.agent_pods(kube) == [], timeout=120, what="no agent pod on the node"
    )


def _start_agent(kube: support.Kube) -> None:
    selector = _daemonset(kube)["spec"]["template"]["spec"]["nodeSelector"]
    if STOPPED in selector:
        path = "/spec/template/spec/nodeSelector/" + STOPPED.replace("/", "~1")
        _patch(kube, [{"op": "remove", "path": path}])
    _rolled_out(kube)


@pytest.fixture
def daemonset(kube: support.Kube, podseg: Any) -> Iterator[None]:
    """The agent DaemonSet as installed again after the test, whatever it did to it."""
    spec = _daemonset(kube)["spec"]["template"]["spec"]
    yield
    now = _daemonset(kube)["spec"]["template"]["spec"]
    ops = []
    for key in ("nodeSelector", "initContainers"):
        if now.get(key) != spec.get(key):
            ops.append({"op": "replace", "path": f"/spec/template/spec/{key}", "value": spec[key]})
    if ops:
        _patch(kube, ops)
    _rolled_out(kube)


def _agent_processes(config: support.Config) -> list[int]:
    """The cluster's agent process (its command line names the DaemonSet's CNI socket), by
    the machine's pid, in the node's PID namespace only."""
    pidns = os.stat(config.pidns).st_ino
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            ns = os.stat(entry / "ns" / "pid").st_ino
        except OSError:
            continue
        if ns == pidns and b"--cni-socket=/run/podseg/cni.sock" in argv and b"agent" in argv:
            found.append(int(entry.name))
    return found


# -- pods ------------------------------------------------------------------------------------


def _servers(kube: support.Kube, ns: str) -> dict[str, str]:
    """Two servers and the client's egress policy: to `allowed` on 80 only."""
    kube.apply(
        support.policy(
            "client-egress",
            {
                "podSelector": {"matchLabels": {"app": "client"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"podSelector": {"matchLabels": {"app": "allowed"}}}],
                        "ports": [{"port": 80, "protocol": "TCP"}],
                    }
                ],
            },
        ),
        namespace=ns,
    )
    return support.run_pods(kube, ns, {"allowed": {"app": "allowed"}, "denied": {"app": "denied"}})


def _client(kube: support.Kube, ns: str, name: str, servers: dict[str, str], attempts: int) -> None:
    """A client pod whose init container tries both servers `attempts` times, first thing."""
    pod = support.agnhost_pod(kube.config, name, {"app": "client"})
    script = ATTEMPTS.format(n=attempts, denied=servers["denied"], allowed=servers["allowed"])
    pod["spec"]["initContainers"] = [
        {
            "name": "first",
            "image": kube.config.agnhost,
            "imagePullPolicy": "Never",
            "command": ["/bin/sh", "-c", script],
        }
    ]
    kube.apply(pod, namespace=ns)


def _attempts(kube: support.Kube, ns: str, name: str, attempts: int) -> dict[str, list[str]]:
    """{peer: [OPEN|CLOSED, ...]} from the init container's log, once it has finished."""

    def finished() -> dict[str, list[str]] | None:
        pod = kube.json("-n", ns, "get", "pod", name)
        states = pod.get("status", {}).get("initContainerStatuses") or []
        if not states or "terminated" not in states[0].get("state", {}):
            return None
        seen: dict[str, list[str]] = {"denied": [], "allowed": []}
        for line in kube.logs(ns, name, "-c", "first").splitlines():
            peer, _, verdict = line.partition(" ")
            seen.setdefault(peer, []).append(verdict)
        return seen

    seen = support.wait_until(
        finished, timeout=120, what=f"the init container of {ns}/{name} finished"
    )
    assert len(seen["denied"]) == len(seen["allowed"]) == attempts, seen
    return seen


def _pod_ip(kube: support.Kube, ns: str, name: str) -> str:
    ip: str = support.wait_until(
        lambda: kube.json("-n", ns, "get", "pod", name).get("status", {}).get("podIP"),
        timeout=60,
        what=f"{ns}/{name} has an IP in the API",
    )
    return ip


def _pending_owner(config: support.Config, ns: str, name: str) -> bool:
    """Whether some pod namespace holds a pending table installed for `ns/name`."""
    script = (
        "for f in /run/netns/*; do nsenter --net=$f nft list table inet podseg-pending "
        "2>/dev/null; done"
    )
    return f"pod={ns}/{name} " in support.in_node(config, script).stdout


def _unprotected(kube: support.Kube) -> tuple[float, float]:
    text = support.agent_metrics(kube)
    count = support.metric(text, "podseg_pod_unprotected_seconds_count") or 0.0
    total = support.metric(text, "podseg_pod_unprotected_seconds_sum") or 0.0
    return count, total


# -- the tests -------------------------------------------------------------------------------


def test_the_daemonset_chains_podseg_cni_into_the_nodes_conflist(
    kube: support.Kube, podseg: Any
) -> None:
    plugins = _plugins(kube.config)
    assert [p["type"] for p in plugins] == ["bridge", "podseg-cni"], plugins
    assert plugins[-1]["agentSocket"] == "/run/podseg/cni.sock"
    assert plugins[-1]["failOpen"] is False
    original = support.node_file(kube.config, CONFLIST + ".podseg-orig")
    assert original is not None and "podseg-cni" not in original
    assert support.in_node(kube.config, "test -x /opt/cni/bin/podseg-cni").returncode == 0
    # the node's directories are its own: the machine's are not written
    assert not os.path.exists("/etc/cni/net.d/10-psg.conflist")
    assert not os.path.exists("/opt/cni/bin/podseg-cni")


def test_a_new_pods_first_connections_follow_its_policy(
    kube: support.Kube, podseg: Any, namespace: Any
) -> None:
    ns = namespace("cni-first")
    servers = _servers(kube, ns)
    before = _unprotected(kube)
    _client(kube, ns, "client", servers, attempts=3)
    seen = _attempts(kube, ns, "client", 3)
    # programmed before the init container ran: the denied peer never, the allowed one at once
    assert seen["denied"] == ["CLOSED"] * 3, seen
    assert seen["allowed"] == ["OPEN"] * 3, seen
    ip = _pod_ip(kube, ns, "client")
    tables = support.tables_of(kube.config, ip)
    assert OWN in tables and PENDING not in tables, tables
    # announced by the plugin: its unprotected time is 0
    after = support.wait_until(
        lambda: (now := _unprotected(kube))[0] > before[0] and now,
        timeout=30,
        what="podseg_pod_unprotected_seconds observed",
    )
    assert after[1] == before[1], (before, after)


def test_agent_stopped_the_pod_stays_pending_then_is_enforced(
    kube: support.Kube, podseg: Any, namespace: Any, daemonset: None
) -> None:
    ns = namespace("cni-closed")
    servers = _servers(kube, ns)
    _stop_agent(kube)
    _client(kube, ns, "client", servers, attempts=3)
    seen = _attempts(kube, ns, "client", 3)
    # fail closed: only the allow-list, so the allowed peer is shut too
    assert seen == {"denied": ["CLOSED"] * 3, "allowed": ["CLOSED"] * 3}, seen
    support.wait_ready(kube, ns, ["client"])  # the kubelet's probes are on the allow-list
    ip = _pod_ip(kube, ns, "client")
    tables = support.tables_of(kube.config, ip)
    assert PENDING in tables and OWN not in tables, tables
    expect(kube, ns, "client", servers["allowed"], 80, allowed=False, timeout=10)

    back = time.monotonic()
    _start_agent(kube)
    expect(kube, ns, "client", servers["allowed"], 80, allowed=True, timeout=60)
    print(f"fail closed: the pending pod enforced {time.monotonic() - back:.1f} s after the start")
    expect(kube, ns, "client", servers["denied"], 80, allowed=False)
    tables = support.tables_of(kube.config, ip)
    assert OWN in tables and PENDING not in tables, tables


def test_fail_open_with_the_agent_stopped_runs_the_pod_unprotected(
    kube: support.Kube, podseg: Any, namespace: Any, daemonset: None
) -> None:
    ns = namespace("cni-open")
    servers = _servers(kube, ns)
    _patch(
        kube,
        [
            {
                "op": "add",
                "path": "/spec/template/spec/initContainers/0/args/-",
                "value": "--fail-open",
            }
        ],
    )
    _rolled_out(kube)
    assert (_ours(kube.config) or {}).get("failOpen") is True
    _stop_agent(kube)
    _client(kube, ns, "client", servers, attempts=2)
    seen = _attempts(kube, ns, "client", 2)
    # as documented: unprotected until the agent programs it, the denied peer too
    assert seen == {"denied": ["OPEN"] * 2, "allowed": ["OPEN"] * 2}, seen
    ip = _pod_ip(kube, ns, "client")
    tables = support.tables_of(kube.config, ip)
    assert PENDING not in tables and OWN not in tables, tables

    _start_agent(kube)
    expect(kube, ns, "client", servers["denied"], 80, allowed=False, timeout=60)
    expect(kube, ns, "client", servers["allowed"], 80, allowed=True)


def test_an_agent_restarted_during_add_answers_it(
    kube: support.Kube, podseg: Any, namespace: Any, daemonset: None
) -> None:
    ns = namespace("cni-restart")
    servers = _servers(kube, ns)
    # ADD waits up to 30 s here: the restart must fit whatever else loads the 2 cores
    args = _daemonset(kube)["spec"]["template"]["spec"]["initContainers"][0]["args"]
    (at,) = [i for i, a in enumerate(args) if a.startswith("--timeout-ms=")]
    path = f"/spec/template/spec/initContainers/0/args/{at}"
    _patch(kube, [{"op": "replace", "path": path, "value": "--timeout-ms=30000"}])
    _rolled_out(kube)
    assert (_ours(kube.config) or {}).get("timeoutMs") == 30000
    (agent,) = _agent_processes(kube.config)
    (pod,) = [p["metadata"]["name"] for p in support.agent_pods(kube)]
    os.kill(agent, signal.SIGSTOP)  # the socket still accepts; nobody answers
    asked = time.monotonic()
    try:
        _client(kube, ns, "client", servers, attempts=3)
        support.wait_until(
            lambda: _pending_owner(kube.config, ns, "client"),
            timeout=60,
            what="the ADD of the client in flight (its pending table in place)",
        )
    finally:
        os.kill(agent, signal.SIGKILL)  # a crash mid-ADD; the kubelet starts the agent again
    support.wait_until(
        lambda: _agent_processes(kube.config) not in ([], [agent]),
        timeout=60,
        what="the agent running again",
    )
    seen = _attempts(kube, ns, "client", 3)
    restarted = kube.logs(support.PODSEG_NS, pod, "-c", "agent")
    answered = [
        line
        for line in restarted.splitlines()
        if '"cni_answered"' in line and '"client"' in line and ns in line
    ]
    # ADD asked again and the restarted agent answered it: the pod started programmed
    assert answered, restarted[-2000:]
    serving = [json.loads(x) for x in restarted.splitlines() if '"cni_socket_serving"' in x]
    print(
        f"agent restarted during ADD: answered {json.loads(answered[0])['wait_ms']} ms after it "
        f"was asked again; socket served again at {serving[0]['timestamp']}; init container "
        f"done {time.monotonic() - asked:.1f} s after the pod was created"
    )
    assert seen == {"denied": ["CLOSED"] * 3, "allowed": ["OPEN"] * 3}, seen
    tables = support.tables_of(kube.config, _pod_ip(kube, ns, "client"))
    assert OWN in tables and PENDING not in tables, tables
    support.wait_until(
        lambda: all(_ready(p) for p in support.agent_pods(kube)),
        timeout=60,
        what="the restarted agent Ready",
    )


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_without_podseg_cni_in_the_conflist_pods_are_enforced_from_the_api(
    kube: support.Kube, podseg: Any, namespace: Any, daemonset: None
) -> None:
    ns = namespace("cni-absent")
    servers = _servers(kube, ns)
    # the node's conflist as before install (as a CNI's own installer would rewrite it)
    restore = f"cp {CONFLIST}.podseg-orig {CONFLIST}.tmp && mv {CONFLIST}.tmp {CONFLIST}"
    assert support.in_node(kube.config, restore).returncode == 0
    assert _ours(kube.config) is None
    before = _unprotected(kube)
    started = time.monotonic()
    _client(kube, ns, "client", servers, attempts=2)
    seen = _attempts(kube, ns, "client", 2)  # no plugin, no promise: reported only
    print(f"without podseg-cni, the init container's first attempts: {seen}")
    ip = _pod_ip(kube, ns, "client")
    expect(kube, ns, "client", servers["denied"], 80, allowed=False)
    expect(kube, ns, "client", servers["allowed"], 80, allowed=True)
    tables = support.tables_of(kube.config, ip)
    assert OWN in tables and PENDING not in tables, tables
    # enforced from the API's IP: its unprotected time is measured, not 0
    after = support.wait_until(
        lambda: (now := _unprotected(kube))[0] > before[0] and now,
        timeout=30,
        what="podseg_pod_unprotected_seconds observed",
    )
    assert 0 < after[1] - before[1] < time.monotonic() - started + 5, (before, after)

    # chained again by the init container (the `daemonset` fixture rolls the agent out)
    kube.run("-n", support.PODSEG_NS, "rollout", "restart", "daemonset/podseg-agent")
    _rolled_out(kube)
    assert _ours(kube.config) is not None
