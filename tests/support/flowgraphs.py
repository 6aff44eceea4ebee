"""Flow graphs for the tests of `podseg map`, `recommend` and `whatif`: the shop example of
docs/examples and a builder of small graphs."""

from __future__ import annotations

import datetime
import pathlib
import subprocess
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from agent.flows import graph

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHOP = ROOT / "docs" / "examples" / "shop-flows.json"
T0 = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.UTC)


def shop() -> graph.FlowGraph:
    return graph.loads(SHOP.read_text())


def workload(namespace: str, name: str, **ports: int) -> graph.Workload:
    return graph.Workload(
        namespace,
        name,
        "Deployment",
        {"app": name},
        tuple(graph.NamedPort(n, p) for n, p in sorted(ports.items())),
    )


def end(text: str) -> graph.Endpoint:
    """`namespace/workload`, or a network for an external endpoint."""
    if ":" in text or text[0].isdigit():
        return graph.Endpoint(external=text)
    namespace, name = text.split("/")
    return graph.Endpoint(namespace, name)


def flow(
    src: str, dst: str, port: int | None, verdict: str = "allowed", proto: str = "TCP"
) -> graph.Flow:
    key = graph.FlowKey(end(src), end(dst), proto, port, verdict)
    return graph.Flow(key, 1, T0, T0 + datetime.timedelta(minutes=5), ("node-1",))


def make(
    workloads: Iterable[graph.Workload],
    flows: Iterable[graph.Flow],
    policies: Iterable[Mapping[str, Any]] = (),
    modes: Mapping[str, str] | None = None,
) -> graph.FlowGraph:
    """A graph of these workloads and flows; each namespace labelled with its mode from
    `modes` (none: enforce)."""
    workloads = tuple(workloads)
    names = sorted({w.namespace for w in workloads})
    namespaces = {
        n: {"kubernetes.io/metadata.name": n}
        | ({"podseg.io/mode": modes[n]} if modes and n in modes else {})
        for n in names
    }
    return graph.FlowGraph(
        generated=T0,
        since=T0,
        until=T0 + datetime.timedelta(hours=1),
        namespaces=namespaces,
        workloads=workloads,
        policies=tuple(policies),
        flows=tuple(flows),
    )


def policy(namespace: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": namespace, "name": name},
        "spec": dict(spec),
    }


def podseg(
    *args: str, env: Mapping[str, str] | None = None, cwd: pathlib.Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The real command line, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(env) if env is not None else None,
        cwd=cwd or ROOT,
    )


def one_line_error(done: subprocess.CompletedProcess[str], command: str) -> str:
    """The single stderr line of a bad-input exit (2)."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"podseg {command}: "), lines[0]
    assert "Traceback" not in done.stderr
    return lines[0]
