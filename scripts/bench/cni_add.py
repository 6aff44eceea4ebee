"""Benchmark: the latency podseg-cni adds to a pod's creation.

Builds a sandbox node with `--background` running pods (IPs in the API) and a NetworkPolicy
selecting the new pods, runs a real `podseg agent --cni-socket`, and creates `--pods` new pods
(100) the way a runtime does: the sandbox namespace exists with its address, the API has the
pod without an IP, then the runtime calls the plugin's ADD (CNI env and stdin with prevResult,
the real binary). Each ADD returns once the agent committed the pod's real ruleset.

Measured, in the same run:
* `add_ms`: each ADD, process start to exit (median, p99): everything podseg-cni adds to the
  chain (without the plugin the chain ends at the main plugin, so this is the overhead);
* `exec_ms`: the plugin's VERSION, i.e. the bare cost of the runtime starting the binary;
* `pending_only_ms`: a fail-open ADD with no agent listening and a 1 ms timeout (the pending
  table in and out, one refused connection);
* `agent_answer_ms`, `agent_pass_ms`: the agent's own view, from its log: request received to
  answer sent, and the pass's event-to-commit latency;
* `agent_pass_split_ms`: where the pass's time went (`reconcile_committed`): queued, compile
  (of which place: the scan of the named namespace with its read-back), kernel (the commit).

Target cni-add: ADD p99 <= 50 ms added per pod. Prints MET / NOT MET, then `RESULT {json}`.
Needs root and Go. Usage: .venv/bin/python scripts/bench/cni_add.py [--pods 100] [--quick]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import uuid
from typing import Any

import benchlib

from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import cniplugin, topology

NODE = "node-1"
NS = "bench"
GOAL_MS = 50.0
# The pass's split (reconcile_committed): queued, compile (of which place: the scan of the
# named namespace with its read-back, one worker round trip), kernel (the commit).
SPLIT = ("queued", "compile", "place", "kernel")


def _api_pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": "new"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "podseg/probe"}]},
    }


def _policy() -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "new-pods", "namespace": NS},
        "spec": {
            "podSelector": {"matchLabels": {"app": "new"}},
            "policyTypes": ["Ingress", "Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "bg"}}}]}],
        },
    }


def _add(
    binary: pathlib.Path,
    cluster: sandbox_cluster.SandboxCluster,
    pod: topology.SandboxPod,
    **keys: Any,
) -> cniplugin.Outcome:
    prev = cniplugin.prev_result(pod, cluster.nodes[NODE])
    conf = cniplugin.network_config(prev, **keys)
    outcome = cniplugin.run(
        binary,
        "ADD",
        conf,
        netns=pod.netns_path,
        container_id=uuid.uuid4().hex,
        pod=(pod.namespace, pod.name),
    )
    if outcome.code != 0:
        raise SystemExit(f"cni_add: ADD failed: {outcome.stdout} {outcome.stderr}")
    return outcome


def measure(args: argparse.Namespace, binary: pathlib.Path) -> dict[str, Any]:
    with sandbox_cluster.SandboxCluster(nodes=(NODE,)) as cluster:
        cluster.ensure_namespace(NS, {"ns": NS})
        for i in range(args.background):
            cluster.add_pod(NS, f"bg{i}", {"app": "bg"})
        cluster.apply_policy(_policy())
        socket = str(cluster.workdir / "cni.sock")
        node = cluster.nodes[NODE]
        names = [f"new{i}" for i in range(args.pods)]
        fresh = cluster.sandbox.add_pods(node, [(NS, n) for n in names])
        idle = cluster.sandbox.add_pods(node, [(NS, f"open{i}") for i in range(args.pods)])
        for pod in fresh:
            cluster.core.create_namespaced_pod(NS, _api_pod(pod.name))
        keys = {"agentSocket": socket, "timeoutMs": 5000}
        # Same run, no agent listening: the pending table in and out again (fail open). ADD
        # asks a missing agent again every 100 ms until its timeout: 1 ms here, one attempt.
        gone = {**keys, "timeoutMs": 1, "failOpen": True}
        open_ms = [_add(binary, cluster, pod, **gone).seconds * 1000 for pod in idle]
        cluster.start_agent(NODE, ["--cni-socket", socket, "--backend", args.backend])
        add_ms, exec_ms = [], []
        for pod in fresh:
            outcome = _add(binary, cluster, pod, **keys)
            if "fail-" in outcome.stderr:
                raise SystemExit(f"cni_add: the agent did not answer: {outcome.stderr}")
            add_ms.append(outcome.seconds * 1000)
            version = cniplugin.run(binary, "VERSION", {"cniVersion": cniplugin.CNI_VERSION})
            exec_ms.append(version.seconds * 1000)
        agent = cluster.agents[NODE]
        waits = [float(e["wait_ms"]) for e in agent.events("cni_answered")]
        lines = agent.events("reconcile_committed")[-len(fresh) :]
        split = {part: [float(e[f"{part}_ms"]) for e in lines] for part in SPLIT}
        return {
            "add_ms": add_ms,
            "exec_ms": exec_ms,
            "open_ms": open_ms,
            "agent_ms": waits,
            "pass_ms": [float(e["latency_ms"]) for e in lines],
            **{f"split_{part}": values for part, values in split.items()},
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    benchlib.common_args(parser)
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--background", type=int, default=20)
    args = parser.parse_args()
    if args.quick:
        args.pods, args.background = 10, 4
    if not cniplugin.go_available():
        print("cni_add: Go is not installed (scripts/setup.sh installs it)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="psg-cni-bench-") as out:
        binary = cniplugin.build(pathlib.Path(out))
        raw = measure(args, binary)
    add, bare, unanswered, agent, passes = (
        benchlib.summary(raw[k]) for k in ("add_ms", "exec_ms", "open_ms", "agent_ms", "pass_ms")
    )
    print(f"podseg-cni ADD, {args.pods} new pods, {args.background} running, agent healthy:")
    print(f"  ADD (all podseg-cni adds)   median {add['median']:.2f} ms  p99 {add['p99']:.2f} ms")
    print(f"  plugin exec alone (VERSION) median {bare['median']:.2f} ms  p99 {bare['p99']:.2f} ms")
    print(
        f"  pending in+out, no agent    median {unanswered['median']:.2f} ms  "
        f"p99 {unanswered['p99']:.2f} ms"
    )
    print(
        f"  agent: request to answer      median {agent['median']:.2f} ms  "
        f"p99 {agent['p99']:.2f} ms (its own log, cni_answered)"
    )
    print(
        f"  agent: event to commit        median {passes['median']:.2f} ms  "
        f"p99 {passes['p99']:.2f} ms (reconcile_committed)"
    )
    split = {part: benchlib.summary(raw[f"split_{part}"]) for part in SPLIT}
    print(
        "  agent: its pass, median / p99  "
        + "  ".join(f"{p} {v['median']:.2f} / {v['p99']:.2f}" for p, v in split.items())
        + " ms"
    )
    print(f"  ratio ADD / plugin exec (median): {add['median'] / bare['median']:.2f}")
    targets = [
        benchlib.target(
            "cni-add",
            f"p99 {add['p99']:.2f} ms",
            add["p99"] <= GOAL_MS,
            f"ADD adds <= {GOAL_MS:.0f} ms per pod at p99 (without the plugin it adds 0)",
        )
    ]
    benchlib.result(
        "cni_add",
        args,
        add_ms=add,
        exec_ms=bare,
        pending_only_ms=unanswered,
        agent_answer_ms=agent,
        agent_pass_ms=passes,
        agent_pass_split_ms=split,
        same_run_ratios={"add_over_exec": add["median"] / bare["median"]},
        targets=targets,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
