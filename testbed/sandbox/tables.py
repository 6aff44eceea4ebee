"""podseg's tables in the sandbox's pod namespaces: read back with `nft`, checked whole, and
compared with what a from-scratch compile of the API state says they must hold.

`expected_rendered` is the oracle: it LISTs the emulator's state afresh, builds a store from it
and compiles every local pod exactly as a freshly started agent would (policies, then
quarantine, node guard and anti-spoofing with the default settings, with what the dataplane
worker's scan sees of the pod's namespace: its link-local addresses and routes).
`kernel_tables` reads each pod namespace and also checks that the owned tables are whole:
every chain of a group present or none, the hook chains there when their direction needs
them, the netdev table there exactly when egress is filtered.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from typing import Any

from agent import config, store
from agent.calc import compile as calc_compile
from agent.calc import containment, ruleset
from agent.dataplane import client, netns
from agent.dataplane.nft import render as render_nft
from agent.k8s import watch
from agent.sync import placement
from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import topology

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
# A sandbox pod's namespace keeps its addresses and routes for its life: scanned once.
_LINKS: dict[str, ruleset.Link] = {}


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
            link=link(cluster, sandbox_pod),
        ).ruleset
        out[key] = render_nft.render(rs, [sandbox_pod.interface])
    return out


def link(cluster: sandbox_cluster.SandboxCluster, pod: topology.SandboxPod) -> ruleset.Link:
    """What the agent's scan sees of `pod`'s namespace (scanned once per namespace)."""
    if pod.netns not in _LINKS:
        found = asyncio.run(_scan(str(cluster.sandbox.netns_dir))).find([pod.ipv4])
        assert found is not None, f"no namespace of the sandbox holds {pod.ipv4}"
        _LINKS[pod.netns] = placement.link_of(found)
    return _LINKS[pod.netns]


async def _scan(netns_dir: str) -> netns.Index:
    worker = client.WorkerClient(timeout=30)
    try:
        return netns.Index(await worker.scan(netns_dir, proc=False))
    finally:
        await worker.close()


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
        orphan = ["netdev table without inet table"] if netdev_text is not None else []
        return None, orphan, (set(), set())
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


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "handle"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def canonical_listing(ns: str) -> list[Any]:
    """Both owned nftables tables of `ns` as JSON objects, without handles and with set elements
    sorted: equal for two namespaces that hold the same rules and elements, however they got
    there (a patch or a fresh apply, one agent or another)."""
    out: list[Any] = []
    for family in ("inet", "netdev"):
        done = subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "-j", "-s", "list", "table", family, "podseg"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            out.append(None)
            continue
        for item in json.loads(done.stdout)["nftables"]:
            if "metainfo" in item:
                continue
            item = _strip(item)
            if "set" in item and "elem" in item["set"]:
                item["set"]["elem"] = sorted(item["set"]["elem"], key=json.dumps)
            out.append(item)
    return out


def ipset_elements(ns: str) -> dict[str, list[str]]:
    """The PODSEG- ipsets of a namespace by name without the generation token: their sorted
    elements (`ipset save`: what the kernel holds, element for element)."""
    out: dict[str, list[str]] = {}
    save = subprocess.run(
        ["ip", "netns", "exec", ns, "ipset", "save"], capture_output=True, text=True, check=True
    ).stdout
    for line in save.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[1].startswith("PODSEG-"):
            continue
        name = "-".join(parts[1].split("-")[2:])
        if parts[0] == "create":
            out.setdefault(name, [])
        elif parts[0] == "add":
            out.setdefault(name, []).append(" ".join(parts[2:]))
    return {name: sorted(elements) for name, elements in out.items()}
