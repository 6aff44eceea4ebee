"""A reconcile pass does the kernel work of all its pods in batched worker requests.

Against the real worker process and real namespaces: the `batch` op answers each part on its
own (one vanished namespace fails only its part), a change that affects several pods is
committed to all of them in one worker round trip, not one per pod, and drop counts stay exact
when a pod's table is patched rather than replaced.
"""

from __future__ import annotations

import asyncio
import pathlib
import secrets
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent import config, metrics, store
from agent.calc import intervals, ruleset
from agent.dataplane import client as dp_client
from agent.dataplane import netns, protocol
from agent.dataplane.nft import render as render_nft
from agent.flows import collector as flows_collector
from agent.k8s import events, watch
from agent.sync import loop as sync_loop

ADDRESSES = ("198.18.7.31", "198.18.7.32", "198.18.7.33")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def pod_namespaces(tmp_path: pathlib.Path) -> Iterator[list[str]]:
    """Three pod namespaces, also linked from `tmp_path`: the agent under test searches only
    there, so its sweep never touches another test run's namespaces."""
    tag = secrets.token_hex(3)
    names: list[str] = []
    try:
        for i, address in enumerate(ADDRESSES):
            name = f"psg-{tag}-b{i}"
            _ip("netns", "add", name)
            names.append(name)
            (tmp_path / name).symlink_to(f"/run/netns/{name}")
            _ip("-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
            _ip("-n", name, "addr", "add", f"{address}/16", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


class CountingClient(dp_client.WorkerClient):
    """The real worker client, counting round trips by op."""

    def __init__(self) -> None:
        super().__init__(timeout=10)
        self.trips: list[tuple[str, int]] = []
        self.ops: list[str] = []  # every request, the parts of batches included

    async def _round_trip(self, request: protocol.Request[Any], parts: int) -> dict[str, Any]:
        inner = request.requests if isinstance(request, protocol.Batch) else ()
        self.trips.append((request.op.value, len(inner)))
        self.ops.extend(part.op.value for part in inner or (request,))
        return await super()._round_trip(request, parts)


def _pod(name: str, ip: str, node: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": name, "uid": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def _relist(resource: str, items: list[dict[str, Any]]) -> watch.Relist:
    return watch.Relist(resource, items, "1", time.monotonic())


def _store(pods: list[dict[str, Any]], policies: list[dict[str, Any]]) -> store.Store:
    """A store in sync (every kind listed) holding namespace `shop`, `pods` and `policies`."""
    cluster = store.Store()
    for resource, items in (
        ("nodes", []),
        ("namespaces", [{"metadata": {"name": "shop"}}]),
        ("pods", pods),
        ("networkpolicies", policies),
        ("services", []),
        ("endpointslices", []),
    ):
        cluster.apply(_relist(resource, items), store.Change())
    return cluster


def _settings(netns_dir: pathlib.Path, **extra: Any) -> config.Settings:
    """Agent settings searching only `netns_dir` (the test's own namespaces)."""
    return config.Settings(
        node_name="node-1",
        kubeconfig=None,
        netns_dir=str(netns_dir),
        scan_proc=False,
        strict=False,
        node_guard_ports=None,
        **extra,
    )


def _nft_list(name: str, *what: str) -> str:
    """`nft list <what>` in the namespace."""
    return subprocess.run(
        ["ip", "netns", "exec", name, "nft", "list", *what],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _listing(name: str) -> str:
    return _nft_list(name, "table", "inet", "podseg")


def test_batch_answers_each_part_on_its_own(
    pod_namespaces: list[str], tmp_path: pathlib.Path
) -> None:
    async def scenario() -> None:
        client = dp_client.WorkerClient(timeout=10)
        try:
            index = netns.Index(await client.scan(str(tmp_path), proc=False))
            first, second = index.find([ADDRESSES[0]]), index.find([ADDRESSES[1]])
            assert first is not None and second is not None
            rs = ruleset.PodRuleset(
                "shop",
                "a",
                ingress=ruleset.DirectionRuleset(
                    isolated=True,
                    any_port_peers=(intervals.address_range("198.18.9.9"),),
                ),
            )
            script = render_nft.render(rs, first.interfaces).script
            gone = protocol.Apply("/run/netns/psg-never-there", 1, script)
            replies: list[Any] = await client.batch(
                [
                    protocol.Apply(first.path, first.ino, script),
                    gone,
                    protocol.Inspect(second.path, second.ino),
                    protocol.Apply(second.path, second.ino, "bogus"),
                ]
            )
            assert isinstance(replies[0], protocol.Committed) and replies[0].digest
            assert isinstance(replies[1], protocol.NetnsGone)
            assert isinstance(replies[2], protocol.Examined) and replies[2].fingerprint is None
            assert isinstance(replies[3], protocol.ApplyFailed)
        finally:
            await client.close()

    asyncio.run(scenario())
    assert "198.18.9.9" in _listing(pod_namespaces[0])
    assert (
        "podseg"
        not in subprocess.run(
            ["ip", "netns", "exec", pod_namespaces[1], "nft", "list", "tables"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )


def test_a_change_to_several_pods_is_one_round_trip(
    pod_namespaces: list[str], tmp_path: pathlib.Path
) -> None:
    policy = {
        "metadata": {"namespace": "shop", "name": "from-client", "resourceVersion": "1"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}],
        },
    }
    local = [_pod(f"web-{i}", ip, "node-1", {"app": "web"}) for i, ip in enumerate(ADDRESSES)]
    client_pod = _pod("client", "198.18.8.1", "node-2", {"role": "client"})
    cluster = _store([*local, client_pod], [policy])
    settings = _settings(tmp_path)
    dataplane = CountingClient()
    rec = sync_loop.Reconciler(settings, cluster, dataplane, events.Recorder(None, "node-1"))

    async def scenario() -> list[tuple[str, int]]:
        try:
            await rec.reconcile(None)
            assert {s.state for s in rec.pods.values()} == {"enforced"}
            # Whole tables went in without a read-back: each commit was the namespace's only
            # one (generation + 1), so a resync finds nothing to list either.
            assert all(t.digest is None for s in rec.pods.values() for t in s.slots.values())
            dataplane.ops.clear()
            await rec.reconcile(None, verify=True)
            assert dataplane.ops.count("generation") == 3 and "inspect" not in dataplane.ops
            dataplane.trips.clear()
            # The client pod gets a second address: one element more in every web pod.
            moved = _pod("client", "198.18.8.2", "node-2", {"role": "client"})
            change = store.Change()
            cluster.apply(watch.WatchEvent("pods", "MODIFIED", moved, time.monotonic()), change)
            await rec.reconcile(change, since=time.monotonic(), kind="pod_ip")
            return list(dataplane.trips)
        finally:
            await dataplane.close()

    trips = asyncio.run(scenario())
    assert trips == [("batch", 3)], trips  # three pods patched, one round trip
    for name in pod_namespaces:
        listing = _listing(name)
        assert "198.18.8.2" in listing and "198.18.8.1" not in listing
    assert {s.state for s in rec.pods.values()} == {"enforced"}


def _tables(name: str) -> str:
    return _nft_list(name, "tables")


def test_a_pod_announced_by_podseg_cni_costs_two_round_trips(
    pod_namespaces: list[str], tmp_path: pathlib.Path
) -> None:
    """podseg-cni's ADD waits for this pass: the scan of the named namespace and its
    first-contact read-back share one round trip, the commit (which also removes the pending
    table) is the other."""
    local = [_pod(f"web-{i}", ip, "node-1", {"app": "web"}) for i, ip in enumerate(ADDRESSES[:2])]
    new = _pod("new", ADDRESSES[2], "node-1", {"app": "web"})
    new["status"] = {"phase": "Pending"}  # the API shows no IP before ADD returns
    policy = {
        "metadata": {"namespace": "shop", "name": "web", "resourceVersion": "1"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]},
    }
    cluster = _store([*local, new], [policy])
    dataplane = CountingClient()
    rec = sync_loop.Reconciler(
        _settings(tmp_path), cluster, dataplane, events.Recorder(None, "node-1")
    )
    pending = pod_namespaces[2]
    _ip("netns", "exec", pending, "nft", "add", "table", "inet", "podseg-pending")
    announced = {
        "key": "shop/new",
        "ips": [ADDRESSES[2]],
        "netns": str(tmp_path / pending),
        "containerId": "c0ffee",
    }

    async def scenario() -> None:
        try:
            await rec.reconcile(None)
            assert "shop/new" not in rec.pods or rec.pods["shop/new"].state != "enforced"
            dataplane.trips.clear()
            dataplane.ops.clear()
            change = store.Change()
            cluster.apply(watch.WatchEvent(store.CNI, "ADDED", announced, 0.0), change)
            await rec.reconcile(change, since=time.monotonic(), kind="cni")
        finally:
            await dataplane.close()

    asyncio.run(scenario())
    assert dataplane.trips == [("batch", 2), ("batch", 1)], dataplane.trips
    assert dataplane.ops == ["scan", "glance", "commit"], dataplane.ops
    assert rec.pods["shop/new"].state == "enforced"
    tables = _tables(pending)
    assert "inet podseg\n" in tables and "podseg-pending" not in tables, tables
    assert "shop/web" in _listing(pending)


def test_a_vanished_namespace_fails_only_its_pod(
    pod_namespaces: list[str], tmp_path: pathlib.Path
) -> None:
    policy = {
        "metadata": {"namespace": "shop", "name": "deny", "resourceVersion": "1"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    local = [_pod(f"web-{i}", ip, "node-1", {"app": "web"}) for i, ip in enumerate(ADDRESSES)]
    cluster = _store(local, [])
    settings = _settings(tmp_path)
    dataplane = dp_client.WorkerClient(timeout=10)
    rec = sync_loop.Reconciler(settings, cluster, dataplane, events.Recorder(None, "node-1"))

    before: dict[str, str | None] = {}

    async def scenario() -> None:
        try:
            await rec.reconcile(None)
            assert {s.state for s in rec.pods.values()} == {"enforced"}
            before.update({key: s.fingerprint for key, s in rec.pods.items()})
            _ip("netns", "del", pod_namespaces[1])
            change = store.Change()
            cluster.apply(watch.WatchEvent("networkpolicies", "ADDED", policy, 0.0), change)
            await rec.reconcile(change, since=time.monotonic(), kind="policy")
        finally:
            await dataplane.close()

    asyncio.run(scenario())
    states = {key: s.state for key, s in rec.pods.items()}
    assert states == {
        "shop/web-0": "enforced",
        "shop/web-1": "unprotected",
        "shop/web-2": "enforced",
    }
    for key, name in (("shop/web-0", pod_namespaces[0]), ("shop/web-2", pod_namespaces[2])):
        committed = render_nft.parse_fingerprint(_listing(name))
        assert committed == rec.pods[key].fingerprint != before[key]  # the new policy is in


@pytest.fixture
def web_and_client(tmp_path: pathlib.Path) -> Iterator[tuple[str, str]]:
    """A pod namespace (198.18.7.34) wired by a veth to a client namespace (198.18.7.50)."""
    tag = secrets.token_hex(3)
    web, client = f"psg-{tag}-bw", f"psg-{tag}-bc"
    try:
        for name in (web, client):
            _ip("netns", "add", name)
        (tmp_path / web).symlink_to(f"/run/netns/{web}")
        _ip(
            "-n",
            web,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            client,
        )
        for name, address in ((web, "198.18.7.34"), (client, "198.18.7.50")):
            _ip("-n", name, "addr", "add", f"{address}/16", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
        # Ready when a datagram reaches the web side: its "port unreachable" comes back.
        subprocess.run(["ip", "netns", "exec", client, "python3", "-c", REACHED], check=True)
        yield web, client
    finally:
        for name in (web, client):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


REACHED = """
import socket, sys, time
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("198.18.7.34", 9))
    s.settimeout(0.2)
    try:
        s.send(b"ready?")
        s.recv(1)
    except ConnectionRefusedError:
        sys.exit(0)
    except OSError:
        pass
    finally:
        s.close()
sys.exit("198.18.7.34 not reachable from the client namespace")
"""


def _send_udp(client: str, count: int) -> None:
    code = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"for _ in range({count}): s.sendto(b'x', ('198.18.7.34', 9))"
    )
    subprocess.run(["ip", "netns", "exec", client, "python3", "-c", code], check=True)


def test_drop_counts_stay_exact_across_a_patch(
    web_and_client: tuple[str, str], tmp_path: pathlib.Path
) -> None:
    """A patch keeps the table's counters counting, so the drop metric must not count the
    drops before the patch a second time (as it must after a replace, which restarts them)."""
    _web, client = web_and_client
    policy = {
        "metadata": {"namespace": "shop", "name": "from-client", "resourceVersion": "1"},
        "spec": {
            "podSelector": {},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}],
        },
    }
    peer = _pod("peer", "198.18.8.1", "node-2", {"role": "client"})
    cluster = _store([_pod("web", "198.18.7.34", "node-1", {}), peer], [policy])
    settings = _settings(tmp_path, flow_log_file=str(tmp_path / "flows.jsonl"))
    dataplane = dp_client.WorkerClient(timeout=10)
    flows = flows_collector.Collector(settings, cluster, dataplane)  # counters only, no NFLOG
    rec = sync_loop.Reconciler(settings, cluster, dataplane, events.Recorder(None, "node-1"), flows)
    labels = {
        "namespace": "shop",
        "workload": "<none>",
        "direction": "ingress",
        "policy_mode": "enforce",
    }

    def dropped() -> float:
        return metrics.REGISTRY.get_sample_value("podseg_dropped_packets_total", labels) or 0.0

    async def counted(expected: float) -> None:
        deadline = time.monotonic() + 10
        while True:
            await flows.read_counters()
            if dropped() - start >= expected or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.05)

    start = dropped()

    async def scenario() -> list[str]:
        modes = []
        try:
            await rec.reconcile(None)
            _send_udp(client, 3)
            await counted(3)
            change = store.Change()
            moved = _pod("peer", "198.18.8.2", "node-2", {"role": "client"})
            cluster.apply(watch.WatchEvent("pods", "MODIFIED", moved, time.monotonic()), change)
            await rec.reconcile(change, since=time.monotonic(), kind="pod_ip")
            modes.append(metrics_mode())
            _send_udp(client, 2)
            await counted(5)
            await flows.read_counters()  # and stays there
        finally:
            await dataplane.close()
        return modes

    def metrics_mode() -> str:
        (slot,) = rec.pods["shop/web"].slots.values()
        return "patch" if slot.digest is None else "replace"

    assert asyncio.run(scenario()) == ["patch"]
    assert dropped() - start == 5
