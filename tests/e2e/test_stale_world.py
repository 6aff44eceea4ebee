"""A world the agent cannot see, against the real agent at its default resync period (60 s):
the API server stops answering (every request 503) while the agent runs, and while it
restarts.

* Running: enforcement goes on, `/readyz` fails once the watches are stale past `--stale-after`
  and passes again when the API server is back.
* Restarted without the API server: the agent never gets a LIST, yet it keeps the rules it
  finds in the kernel and puts back a table a pod deletes (counted and logged as drift), and
  it is not Ready until the API server answers; then the reconciler takes over."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import probe
from tests.support.live import Env, sample
from tests.support.polling import wait_for

STALE_AFTER = 2.0
DENIED = "t/a"  # egress-isolated with no egress allowed
BLOCKED = (probe.TIMEOUT, probe.EPERM)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with sandbox_cluster.SandboxCluster(nodes=("node-1",)) as cluster:
        cluster.ensure_namespace("t", {"ns": "t"})
        for name in ("a", "b"):
            cluster.add_pod("t", name, {"pod": name})
        cluster.apply_policy(
            {
                "metadata": {"namespace": "t", "name": "a-no-egress"},
                "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"]},
            }
        )
        cluster.start_agent("node-1", ["--stale-after", str(STALE_AFTER)])
        env = Env(cluster)
        env.wait_verdict(DENIED, "t/b", probe.TIMEOUT)
        try:
            yield env
        finally:
            cluster.emulator.faults.reset()


def api_down(env: Env) -> None:
    env.cluster.emulator.faults.error_status = 503
    env.cluster.emulator.drop_watches()


def api_up(env: Env) -> None:
    env.cluster.emulator.faults.reset()


def nft(env: Env, pod: str, *args: str) -> subprocess.CompletedProcess[str]:
    netns = env.cluster.pods[pod].netns
    return subprocess.run(
        ["ip", "netns", "exec", netns, "nft", *args], capture_output=True, text=True, check=False
    )


def listing(env: Env, pod: str) -> str:
    return "".join(
        nft(env, pod, "-s", "list", "table", family, "podseg").stdout
        for family in ("inet", "netdev")
    )


def test_readiness_drops_while_the_api_is_unreachable_and_returns_with_it(env: Env) -> None:
    agent = env.agent
    assert agent.ready()
    api_down(env)
    try:
        wait_for(lambda: not agent.ready(), timeout=STALE_AFTER + 10, what="not ready")
        assert sample(agent, "podseg_agent_ready") == 0
        assert env.verdict(DENIED, "t/b") in BLOCKED  # enforcement goes on meanwhile
    finally:
        api_up(env)
    wait_for(agent.ready, timeout=30, what="ready again")
    assert sample(agent, "podseg_agent_ready") == 1


def test_an_agent_restarted_without_the_api_holds_and_repairs_the_kernels_rules(
    env: Env,
) -> None:
    agent = env.agent
    before = listing(env, DENIED)
    assert "table inet podseg" in before
    agent.stop()
    api_down(env)
    try:
        env.cluster.start_agent("node-1", wait=False)
        started = wait_for(
            lambda: agent.events("holdover_started"), timeout=20, what="holdover started"
        )
        assert started[-1]["namespaces"] >= 2
        assert not agent.ready()
        assert env.verdict(DENIED, "t/b") in BLOCKED
        drift = sample(agent, "podseg_ruleset_drift_total") or 0.0
        done = nft(env, DENIED, "delete", "table", "inet", "podseg")
        assert done.returncode == 0, done.stderr
        wait_for(lambda: listing(env, DENIED) == before, timeout=3, interval=0.01, what="repair")
        assert env.verdict(DENIED, "t/b") in BLOCKED
        wait_for(
            lambda: (sample(agent, "podseg_ruleset_drift_total") or 0.0) > drift,
            what="drift counted",
        )
        logged = [e for e in agent.events("ruleset_drift") if e.get("restored") == "holdover"]
        assert logged and logged[-1]["owner"].endswith("pod=t/a")
        assert (sample(agent, "podseg_holdover_namespaces") or 0) >= 2
        assert not agent.ready()
    finally:
        api_up(env)
    wait_for(agent.ready, timeout=30, what="ready once the API answers")
    assert agent.events("holdover_ended")
    assert sample(agent, "podseg_holdover_namespaces") == 0
    assert env.verdict(DENIED, "t/b") == probe.TIMEOUT
