"""The agent with `--backend iptables`: adoption after a restart, the sweep of a deleted pod's
rules and drift repair, checked with live probes and by reading the pods' iptables back.
(The whole conformance suite runs on both backends through `conftest.model_cluster`.)"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from agent.dataplane.ipt import render as render_ipt
from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import probe, topology
from tests.support import live
from tests.support.polling import wait_for

PODS = live.PODS


def _in(netns: str, *args: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", netns, *args], capture_output=True, text=True, check=True
    ).stdout


def saved(pod: topology.SandboxPod, family: int = 4) -> str:
    tool = "iptables-save" if family == 4 else "ip6tables-save"
    return _in(pod.netns, tool, "-t", "filter")


@pytest.fixture(scope="module")
def env() -> Iterator[live.Env]:
    if not all(shutil.which(t) for t in ("iptables-restore", "ip6tables-restore", "ipset")):
        pytest.skip("needs iptables-restore, ip6tables-restore and ipset (scripts/setup.sh)")
    with sandbox_cluster.SandboxCluster(nodes=("node-1",)) as cluster:
        cluster.ensure_namespace("t", {"ns": "t"})
        for name in (*PODS, "gone"):
            cluster.add_pod("t", name, {"pod": name})
        cluster.start_agent("node-1", ["--backend", "iptables", "--resync-period", "1"])
        yield live.Env(cluster)


def test_tampered_rules_are_restored_at_resync(env: live.Env) -> None:
    env.deny_a()
    env.wait_verdict("t/b", "t/a", probe.TIMEOUT)
    drift = live.sample(env.agent, "podseg_ruleset_drift_total") or 0
    netns = env.cluster.pods["t/a"].netns
    # Keeps our owner rule and fingerprint: only the digest of the read-back sees it.
    _in(netns, "iptables", "-I", render_ipt.INPUT, "2", "-j", "ACCEPT")
    assert env.verdict("t/b", "t/a") == probe.OK  # the tamper opened the pod...
    env.wait_verdict("t/b", "t/a", probe.TIMEOUT)  # ...until the resync restored it
    assert (live.sample(env.agent, "podseg_ruleset_drift_total") or 0) > drift
    assert "-A PODSEG-INPUT -j ACCEPT" not in saved(env.cluster.pods["t/a"])


def test_restart_adopts_rules_and_sweeps_a_pod_deleted_meanwhile(env: live.Env) -> None:
    env.deny_a()
    env.wait_verdict("t/b", "t/a", probe.TIMEOUT)
    gone = env.cluster.pods["t/gone"]
    assert render_ipt.parse_fingerprint(saved(gone)) is not None
    assert env.agent.stop() == 0
    assert env.verdict("t/b", "t/a") == probe.TIMEOUT  # fail closed while it is gone
    env.cluster.core.delete_namespaced_pod("gone", "t")  # unseen: only the sweep can clean
    agent = env.cluster.start_agent("node-1")
    adopted = {e["pod"] for e in agent.events("ruleset_adopted")}
    applied = {e["pod"] for e in agent.events("ruleset_applied")}
    assert adopted == set(PODS) and applied == set()
    swept = wait_for(lambda: agent.events("leftover_table_swept"), what="sweep")
    assert [e["owner"] for e in swept] == ["t/gone"]
    assert "PODSEG" not in saved(gone, 4) + saved(gone, 6)
    assert _in(gone.netns, "ipset", "list", "-n").strip() == ""
    assert env.verdict("t/b", "t/a") == probe.TIMEOUT
    for key in (f"t/{p}" for p in PODS):
        netns = env.cluster.pods[key].netns
        assert "inet podseg" not in _in(netns, "nft", "list", "tables")  # never the nft table
        assert render_ipt.parse_fingerprint(saved(env.cluster.pods[key], 6)) is not None


def test_a_peer_label_flip_is_an_ipset_patch_and_flips_the_verdict(env: live.Env) -> None:
    """A remote peer's label flip reaches the pod's live ipsets as element changes (the sets'
    generation stays, no whole apply), a real TCP connection's verdict follows it, and a
    restarted agent adopts the patched rules by their fingerprint."""
    env.cluster.label_pod("t/c", {"role": "client"})
    env.cluster.apply_policy(
        {
            "metadata": {"namespace": "t", "name": "allow-clients"},
            "spec": {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                        "ports": [{"port": 80, "protocol": "TCP"}],
                    }
                ],
            },
        }
    )
    env.wait_verdict("t/c", "t/a", probe.OK)
    env.wait_verdict("t/b", "t/a", probe.TIMEOUT)
    netns = env.cluster.pods["t/a"].netns
    sets = _in(netns, "ipset", "list", "-n").split()
    patches = live.sample(env.agent, "podseg_ruleset_updates_total", mode="patch") or 0
    try:
        env.cluster.label_pod("t/b", {"role": "client"})
        env.wait_verdict("t/b", "t/a", probe.OK)
        assert _in(netns, "ipset", "list", "-n").split() == sets  # the same live sets
        assert (live.sample(env.agent, "podseg_ruleset_updates_total", mode="patch") or 0) > (
            patches
        )
        # A restarted agent reads the patched fingerprint back and adopts the rules as they are.
        assert env.agent.stop() == 0
        agent = env.cluster.start_agent("node-1")
        assert "a" in {e["pod"] for e in agent.events("ruleset_adopted")}
        assert "a" not in {e["pod"] for e in agent.events("ruleset_applied")}
        assert _in(netns, "ipset", "list", "-n").split() == sets
    finally:
        env.cluster.label_pod("t/b", {"role": None})
    # (An adopted ruleset is applied whole once before it is patched: new set names here.)
    env.wait_verdict("t/b", "t/a", probe.TIMEOUT)
    env.cluster.label_pod("t/c", {"role": None})
