"""Decoy namespaces, live: a namespace holding a pod's addresses besides the pod's own (what
any process able to create a namespace can set up to make the pod's addresses ambiguous) does
not leave the pod unenforced. The agent programs every namespace holding the pod's
addresses, locks down one that holds another pod's addresses too, and reports both (Event,
log line, counter). The decoys exist before the agent starts, as they would on a node where
a hostile process was first."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import probe
from tests.support import live
from tests.support.polling import wait_for

NS = "dc"


class Env:
    def __init__(self, cluster: sandbox_cluster.SandboxCluster, decoys: dict[str, str]) -> None:
        self.cluster = cluster
        self.decoys = decoys  # role -> namespace name

    @property
    def agent(self) -> sandbox_cluster.AgentProcess:
        return self.cluster.agents["node-1"]

    def verdict(self, src: str, dst: str, family: int = 4) -> str:
        pod = self.cluster.pods[dst]
        ip = pod.ipv4 if family == 4 else pod.ipv6
        return probe.probe(self.cluster.pods[src], ip or "", 80, timeout=0.5)

    def events(self, pod: str) -> list[str]:
        items = self.cluster.core.list_namespaced_event(NS).items
        return [
            e.message
            for e in items
            if e.reason == "SeveralNamespaces" and e.involved_object.name == pod
        ]


def _decoy(cluster: sandbox_cluster.SandboxCluster, name: str, addresses: list[str]) -> str:
    """A namespace `psg-<run>-<name>` in the sandbox's namespace directory, holding
    `addresses` on an interface called eth0 (the pod's own interface name)."""
    netns = f"{cluster.sandbox.prefix}{name}"
    lines = [
        ["ip", "netns", "add", netns],
        ["ip", "-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
        *(
            ["ip", "-n", netns, "addr", "add", a, "dev", "eth0", "nodad"]
            if ":" in a
            else ["ip", "-n", netns, "addr", "add", a, "dev", "eth0"]
            for a in addresses
        ),
        ["ip", "-n", netns, "link", "set", "eth0", "up"],
    ]
    for line in lines:
        subprocess.run(line, check=True, capture_output=True)
    (cluster.sandbox.netns_dir / netns).symlink_to(f"/run/netns/{netns}")
    return netns


def _remove(cluster: sandbox_cluster.SandboxCluster, netns: str) -> None:
    (cluster.sandbox.netns_dir / netns).unlink(missing_ok=True)
    subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)


@pytest.fixture(scope="module", params=live.BACKENDS)
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    """Pods victim (ingress-isolated, nothing allowed) and client; a decoy holding the
    victim's addresses, and a contested namespace holding the victim's and the client's."""
    with sandbox_cluster.SandboxCluster(nodes=("node-1",)) as cluster:
        cluster.ensure_namespace(NS, {"ns": NS})
        for name in ("victim", "client"):
            cluster.add_pod(NS, name, {"pod": name})
        cluster.apply_policy(
            {
                "metadata": {"namespace": NS, "name": "deny-victim-ingress"},
                "spec": {
                    "podSelector": {"matchLabels": {"pod": "victim"}},
                    "policyTypes": ["Ingress"],
                },
            }
        )
        victim, client = cluster.pods[f"{NS}/victim"], cluster.pods[f"{NS}/client"]
        decoys: dict[str, str] = {}
        try:
            decoys["decoy"] = _decoy(cluster, "decoy", [f"{victim.ipv4}/32", f"{victim.ipv6}/128"])
            decoys["contested"] = _decoy(
                cluster,
                "contested",
                [
                    f"{victim.ipv4}/32",
                    f"{victim.ipv6}/128",
                    f"{client.ipv4}/32",
                    f"{client.ipv6}/128",
                ],
            )
            cluster.start_agent("node-1", live.backend_args(request))
            yield Env(cluster, decoys)
        finally:
            for netns in decoys.values():
                _remove(cluster, netns)


def test_a_decoy_holding_the_pods_addresses_leaves_it_enforced(env: Env) -> None:
    for family in (4, 6):
        wait_for(
            lambda f=family: env.verdict(f"{NS}/client", f"{NS}/victim", f) == probe.TIMEOUT,
            what=f"victim isolated over IPv{family} despite the decoys",
        )
    assert env.verdict(f"{NS}/victim", f"{NS}/client") == probe.OK  # the rest still flows


def test_every_holder_is_reported_and_the_contested_one_locked_down(env: Env) -> None:
    decoy, contested = env.decoys["decoy"], env.decoys["contested"]
    message = wait_for(lambda: env.events("victim"), what="SeveralNamespaces Event")[-1]
    assert decoy in message
    # The contested namespace is programmed (locked down) by one claimant, the first by key.
    client = wait_for(lambda: env.events("client"), what="SeveralNamespaces Event (client)")[-1]
    assert f"{contested} (locked down)" in client
    logged = [e for e in env.agent.events("pod_in_several_namespaces") if e["pod"] == "victim"]
    assert logged and any(decoy in path for path in logged[-1]["netns"])
    programmed = live.sample(env.agent, "podseg_extra_namespaces_total", action="programmed")
    locked = live.sample(env.agent, "podseg_extra_namespaces_total", action="locked")
    assert (programmed or 0) >= 1 and (locked or 0) >= 1
    # Each holder carries podseg's rules in the kernel (both backends hook the device egress
    # there: anti-spoofing), the decoy the victim's, the contested one a lockdown.
    for netns in (decoy, contested):
        wait_for(lambda n=netns: _holds_podseg_rules(n), what=f"podseg's table in {netns}")
    applied = [e for e in env.agent.events("ruleset_applied") if e.get("lockdown")]
    assert any(str(e.get("netns", "")).endswith(contested) for e in applied)


def _holds_podseg_rules(netns: str) -> bool:
    listed = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "table", "netdev", "podseg"],
        capture_output=True,
        text=True,
        check=False,
    )
    return listed.returncode == 0 and "anti_spoof" in listed.stdout
