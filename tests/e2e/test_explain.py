"""`podseg explain --live` and `podseg status` against a running agent: for every ordered pair
of the upstream model (pods a, b, c in x, y, z; ports 80, 81; TCP and UDP) under several
policy sets, the answer from the API alone and the one from the node agent's programmed
ruleset both equal the live probe, and the agent confirms its kernel holds that ruleset. The
command-line forms are run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from agent import config
from agent.calc import explain as calc_explain
from agent.commands import agents, explain
from agent.k8s import clients, snapshot
from testbed.sandbox import probe
from tests.support.live import Model

POLICY_SETS: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "deny-all-x": [("x", "deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})],
    "a-from-y-on-80": [
        (
            "x",
            "a-from-y",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [
                    {
                        "from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                        "ports": [{"port": 80, "protocol": "TCP"}],
                    }
                ],
            },
        )
    ],
    "b-egress-to-c-udp": [
        (
            "y",
            "b-to-c",
            {
                "podSelector": {"matchLabels": {"pod": "b"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"podSelector": {"matchLabels": {"pod": "c"}}}],
                        "ports": [{"port": 81, "protocol": "UDP"}],
                    }
                ],
            },
        )
    ],
}

SETTLE_SECONDS = 30


def _agent_url(model: Model) -> str:
    return f"http://127.0.0.1:{model.cluster.agents['node-1'].metrics_port}"


def test_explain_from_the_api_and_live_equals_every_probe(model: Model) -> None:
    live = agents.from_urls([_agent_url(model)])
    for name, policies in POLICY_SETS.items():
        model.cluster.delete_all_policies()
        for namespace, policy, spec in policies:
            model.policy(namespace, policy, spec)
        # The agent may still be committing when two probe rounds first agree: compare until
        # the answers hold (a disagreement that lasts past the deadline is a failure).
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            wrong = _disagreements(model, live, name)
            if not wrong or time.monotonic() > deadline:
                break
        assert not wrong, "\n".join(wrong[:20])


def _disagreements(model: Model, live: dict[str, agents.Agent], name: str) -> list[str]:
    """Every pair whose live probe, API-only explanation or agent's answer disagree."""
    verdicts = _settled_matrix(model)
    api = clients.api_client(model.cluster.kubeconfig)
    try:
        cluster = snapshot.load(api)
    finally:
        api.close()
    wrong = []
    for (src, dst, port, proto), seen in sorted(verdicts.items()):
        found = explain.explain(
            cluster, src, model.ip(dst), port, proto.upper(), config.Settings("", None)
        )
        addresses = {
            found.source: found.source_address,
            found.destination: found.destination_address,
        }
        sides = explain.live_sides(found, cluster, live, addresses)
        allowed = seen == probe.OK
        if (found.verdict == calc_explain.ALLOWED) != allowed:
            wrong.append(f"{name} {src}->{dst} {port}/{proto}: api {found.verdict}, probe {seen}")
        for side, by_agent in zip(found.sides, sides, strict=True):
            if side.direction == "loopback":
                continue
            if by_agent.verdict != side.verdict or not by_agent.agrees:
                wrong.append(f"{name} {src}->{dst} {port}/{proto}: live {by_agent}")
    return wrong


def _settled_matrix(model: Model) -> dict[tuple[str, str, int, str], str]:
    """The probed matrix once two rounds in a row agree (the agent has committed)."""
    before: dict[tuple[str, str, int, str], str] = {}
    for _ in range(20):
        now = probe.probe_matrix(model.pods(), timeout=0.8)
        if now == before:
            return now
        before = now
    raise AssertionError("the matrix did not settle")


def test_the_command_lines_answer_as_documented(model: Model) -> None:
    model.policy("x", "deny", {"podSelector": {}, "policyTypes": ["Ingress"]})
    model.converge(model.reach().ingress("x/*", False).expect("x/*", "x/*", False))
    url = _agent_url(model)
    base = [sys.executable, "-m", "agent"]
    kube = ["--kubeconfig", model.cluster.kubeconfig]
    blocked = subprocess.run(
        [*base, "explain", "y/a", "x/b", "--port", "80", "--live", "--agent-url", url, *kube],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert blocked.returncode == 1, blocked.stderr
    assert blocked.stdout.splitlines()[0] == "y/a -> x/b TCP/80: DENIED"
    assert "isolated by x/deny; no rule allows y/a" in blocked.stdout
    assert "the kernel holds it: agrees" in blocked.stdout
    status = subprocess.run(
        [*base, "status", "--agent-url", url, "-o", "json", *kube],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    (row,) = json.loads(status.stdout)
    assert row["node"] == "node-1" and row["ready"] is True
    assert row["pods"]["enforced"] == 9 and row["version"]
