"""README's guardrails example, for real: docs/examples/guardrails.yaml applied to the API
emulator with a running agent; live probes between the pods give the verdicts the precedence
promises, and `podseg explain` prints exactly the lines README.md shows."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import probe

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "guardrails.yaml"
PORTS = (22, 445, 8080)
PODS = {
    "shop/web": {"app": "web"},
    "shop/api": {"app": "api"},
    "monitoring/prometheus": {"app": "prometheus"},
}


@pytest.fixture(scope="module")
def shop() -> Iterator[sandbox_cluster.SandboxCluster]:
    with sandbox_cluster.SandboxCluster(nodes=("node-1",), ipv6=False) as cluster:
        for key, labels in PODS.items():
            namespace, name = key.split("/")
            cluster.add_pod(namespace, name, labels, serve=PORTS)
        cluster.install_admin_crds()
        cluster.start_agent("node-1")
        for doc in yaml.safe_load_all(EXAMPLE.read_text()):
            _apply(cluster, doc)
        yield cluster


def _apply(cluster: sandbox_cluster.SandboxCluster, doc: dict[str, Any]) -> None:
    if doc["kind"] == "NetworkPolicy":
        cluster.apply_policy({"metadata": doc["metadata"], "spec": doc["spec"]})
    else:
        cluster.apply_admin_policy(doc["kind"], doc["metadata"]["name"], doc["spec"])


def _verdicts(cluster: sandbox_cluster.SandboxCluster) -> dict[tuple[str, str, int], str]:
    return {
        (src, dst, port): probe.probe(cluster.pods[src], cluster.pods[dst].ipv4, port, timeout=0.6)
        for src in PODS
        for dst in PODS
        if src != dst
        for port in PORTS
    }


def _expected(src: str, dst: str, port: int) -> str:
    if port in (22, 445):
        return probe.TIMEOUT  # Admin tier: denied between all pods, whatever else allows
    if src == "monitoring/prometheus":
        return probe.OK  # Admin tier: monitoring is always let in
    if dst == "shop/api":
        return probe.OK if src == "shop/web" else probe.TIMEOUT  # shop's own NetworkPolicy
    return probe.TIMEOUT  # no NetworkPolicy isolates the pod: the Baseline default deny


def test_the_precedence_holds_on_live_probes(shop: sandbox_cluster.SandboxCluster) -> None:
    expected = {key: _expected(*key) for key in _verdicts(shop)}
    deadline = time.monotonic() + 30
    while (got := _verdicts(shop)) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert got == expected


def _readme_blocks() -> list[list[str]]:
    """The console blocks of README's guardrails section: each `$ podseg explain` line with
    the output under it."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Guardrails for the platform team", 1)[1].split("\n## ", 1)[0]
    blocks: list[list[str]] = []
    for block in section.split("```\n")[1::2]:
        for line in block.splitlines():
            if line.startswith("$ "):
                blocks.append([line])
            elif blocks:
                blocks[-1].append(line)
    return blocks


def test_explain_prints_what_readme_shows(shop: sandbox_cluster.SandboxCluster) -> None:
    blocks = _readme_blocks()
    assert len(blocks) >= 3
    for command, *output in blocks:
        args = command.removeprefix("$ podseg ").split()
        run = subprocess.run(
            [sys.executable, "-m", "agent", *args, "--kubeconfig", shop.kubeconfig],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert _abridged(run.stdout.splitlines()) == output, (command, run.stdout, run.stderr)


def _abridged(lines: list[str]) -> list[str]:
    """The output as README abridges it: the egress side and its reasons left out."""
    out: list[str] = []
    skipping = False
    for line in lines:
        if not line.startswith("    "):
            skipping = line.startswith("  egress of ")
        if not skipping:
            out.append(line)
    return out
