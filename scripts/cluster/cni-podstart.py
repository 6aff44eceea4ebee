#!/usr/bin/env python3
"""Pod start on the test cluster with and without podseg-cni chained (docs/cni.md).

Needs the cluster up with podseg installed (`bash scripts/cluster.sh podseg install`), so the
node's conflist chains podseg-cni and keeps the original beside it. Creates pods one at a time
in blocks that alternate between the chained conflist and the original one (swapped in the
node's /etc/cni/net.d, as a CNI's installer would), and reports per block:

* the sandbox time: containerd's RunPodSandbox, from its log (CNI ADD of every plugin);
* create -> Running: from `kubectl apply` to the pod's phase Running (`kubectl wait`, a watch);
* the plugin's own ADD (blocks with it): the duration podseg-cni logs on stderr for each ADD
  (containerd writes it to its log), split into installing the pending table and waiting for
  the agent;
* the agent's side: its wait for the pod (`cni_answered`) and the pass that programmed it
  (`reconcile_committed`: queued / compile, of which placing / kernel), from the agent's log.

    python3 scripts/cluster/cni-podstart.py [--pods 10] [--blocks 4] [--budget-ms 50]

The added time per pod start is the sandbox time with minus without, at p50 and p99; the
verdict compares the plugin's own ADD p99 with the budget (what the plugin adds to a pod
start; the sandbox p99 on a loaded machine is mostly other load). The load average is read
before and after. The chained conflist is back in place at the end. Prints one
`RESULT {json}` line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import secrets
import statistics
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFLIST = "/etc/cni/net.d/10-psg.conflist"


def config() -> dict[str, str]:
    names = ("BIN", "KUBECONFIG_ADMIN", "MNTNS", "AGNHOST_IMAGE", "LOGS")
    script = f". {HERE / 'config.sh'}; printf '%s\\n' " + " ".join(f'"${n}"' for n in names)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return dict(zip(names, out.stdout.splitlines(), strict=True))


CFG = config()


def kubectl(*args: str, stdin: str | None = None) -> str:
    cmd = [f"{CFG['BIN']}/kubectl", "--kubeconfig", CFG["KUBECONFIG_ADMIN"], *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=True).stdout


def in_node(script: str) -> None:
    subprocess.run(["nsenter", f"--mount={CFG['MNTNS']}", "--", "sh", "-c", script], check=True)


def pod(name: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "containers": [
                    {
                        "name": "c",
                        "image": CFG["AGNHOST_IMAGE"],
                        "imagePullPolicy": "Never",
                        "args": ["pause"],
                    }
                ],
            },
        }
    )


def start_one(ns: str, name: str) -> float:
    t0 = time.monotonic()
    kubectl("-n", ns, "apply", "-f", "-", stdin=pod(name))
    # One watch, not a kubectl process every 50 ms: polling loaded the 2 cores it measures.
    jsonpath = "--for=jsonpath={.status.phase}=Running"
    kubectl("-n", ns, "wait", jsonpath, f"pod/{name}", "--timeout=120s")
    return (time.monotonic() - t0) * 1000


def sandbox_ms(ns: str) -> dict[str, float]:
    """RunPodSandbox durations of the pods of `ns`, from containerd's log."""
    start: dict[str, datetime.datetime] = {}
    out: dict[str, float] = {}
    pattern = re.compile(r'time="([^"]+)".*RunPodSandbox for &PodSandboxMetadata\{Name:([^,]+),')
    for line in Path(CFG["LOGS"], "containerd.log").read_text(errors="replace").splitlines():
        if f"Namespace:{ns}," not in line:
            continue
        match = pattern.search(line)
        if match is None:
            continue
        at = datetime.datetime.fromisoformat(match.group(1)[:26].rstrip("Z"))
        if "returns sandbox id" in line and match.group(2) in start:
            out[match.group(2)] = (at - start[match.group(2)]).total_seconds() * 1000
        else:
            start[match.group(2)] = at
    return out


PLUGIN_LINE = re.compile(
    r"podseg-cni: add ([^/ ]+)/(\S+) (\S+) in ([0-9.]+) ms "
    r"\(pending table ([0-9.]+) ms, agent ([0-9.]+) ms\)"
)


def plugin_ms(ns: str) -> dict[str, dict[str, float]]:
    """The plugin's own ADD of each pod of `ns`, from the line it logs on stderr."""
    out: dict[str, dict[str, float]] = {}
    for line in Path(CFG["LOGS"], "containerd.log").read_text(errors="replace").splitlines():
        match = PLUGIN_LINE.search(line)
        if match is None or match.group(1) != ns:
            continue
        if match.group(3) != "programmed":
            raise SystemExit(
                f"{ns}/{match.group(2)}: ADD {match.group(3)}: the agent is not healthy"
            )
        total, table, agent = (float(match.group(i)) for i in (4, 5, 6))
        out[match.group(2)] = {"total": total, "pending": table, "agent": agent}
    return out


def agent_lines(ns: str) -> dict[str, dict[str, float]]:
    """Per pod of `ns`: the agent's wait (`cni_answered`) and its pass's split (the
    `reconcile_committed` line after the pod's `ruleset_applied`), from the agent's log."""
    pods = kubectl("-n", "podseg-system", "get", "pod", "-o", "name").split()
    lines: list[dict[str, object]] = []
    for name in pods:
        for raw in kubectl("-n", "podseg-system", "logs", name, "-c", "agent").splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
    out: dict[str, dict[str, float]] = {}
    applied: str | None = None
    for line in lines:
        event, pod = line.get("event"), str(line.get("pod"))
        if line.get("namespace") == ns and event == "cni_answered":
            out.setdefault(pod, {})["wait"] = float(str(line["wait_ms"]))
        elif line.get("namespace") == ns and event == "ruleset_applied":
            applied = pod
        elif event == "reconcile_committed" and applied is not None:
            parts = ("queued_ms", "compile_ms", "place_ms", "kernel_ms")
            out.setdefault(applied, {}).update(
                {p[:-3]: float(str(line.get(p, "nan"))) for p in parts}
            )
            applied = None
    return out


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"median": float("nan"), "p99": float("nan"), "n": 0}
    return {
        "median": round(statistics.median(ordered), 1),
        "p99": round(percentile(ordered, 0.99), 1),
        "max": round(ordered[-1], 1),
        "n": len(values),
    }


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10, help="pods per block")
    parser.add_argument("--blocks", type=int, default=4, help="blocks, alternating (even)")
    parser.add_argument("--budget-ms", type=float, default=50.0, help="p99 budget of the ADD")
    args = parser.parse_args()
    load_before = loadavg()
    in_node(f"cp {CONFLIST} {CONFLIST}.bench-chained")  # an extension containerd ignores
    chained = {"with": [], "without": []}  # type: dict[str, list[tuple[float, float]]]
    plugin: list[dict[str, float]] = []
    agent: list[dict[str, float]] = []
    try:
        for block in range(args.blocks):
            mode = "without" if block % 2 == 0 else "with"
            source = f"{CONFLIST}.podseg-orig" if mode == "without" else f"{CONFLIST}.bench-chained"
            in_node(f"cp {source} {CONFLIST}.tmp && mv {CONFLIST}.tmp {CONFLIST}")
            time.sleep(1.0)  # containerd reloads its CNI configuration on the file's event
            ns = f"psg-cnibench-{mode}-{secrets.token_hex(3)}"
            kubectl("create", "namespace", ns)
            kubectl("-n", ns, "wait", "--for=create", "serviceaccount/default", "--timeout=60s")
            walls = {f"p{i}": start_one(ns, f"p{i}") for i in range(args.pods)}
            sandboxes = sandbox_ms(ns)
            chained[mode] += [(sandboxes[n], walls[n]) for n in walls if n in sandboxes]
            if mode == "with":
                adds = plugin_ms(ns)
                if set(adds) != set(walls):
                    raise SystemExit(f"{ns}: plugin lines for {sorted(adds)}, not {sorted(walls)}")
                plugin += adds.values()
                agent += agent_lines(ns).values()
            kubectl("delete", "namespace", ns, "--wait=false")
            block_sandbox = summary([sandboxes[n] for n in walls if n in sandboxes])
            print(f"block {block} {mode:8} sandbox {block_sandbox}  load {loadavg()}")
    finally:
        in_node(f"mv {CONFLIST}.bench-chained {CONFLIST}")
    load_after = loadavg()
    result = {
        mode: {
            "sandbox_ms": summary([s for s, _ in pairs]),
            "create_to_running_ms": summary([w for _, w in pairs]),
        }
        for mode, pairs in chained.items()
    }
    delta = {
        key: {
            q: round(result["with"][key][q] - result["without"][key][q], 1)
            for q in ("median", "p99")
        }
        for key in ("sandbox_ms", "create_to_running_ms")
    }
    own = {part: summary([a[part] for a in plugin]) for part in ("total", "pending", "agent")}
    served = {
        part: summary([a[part] for a in agent if part in a])
        for part in ("wait", "queued", "compile", "place", "kernel")
    }
    verdict = "MET" if own["total"]["p99"] <= args.budget_ms else "NOT MET"
    for mode, row in result.items():
        running = row["create_to_running_ms"]
        print(f"{mode:8} sandbox {row['sandbox_ms']}  create->Running {running}")
    print(f"added per pod start (with - without): {delta}")
    print(f"plugin's own ADD: {own}")
    print(f"agent, per pod: {served}")
    print(f"load average: before {load_before}, after {load_after}")
    print(
        f"budget: plugin's own ADD p99 {own['total']['p99']} ms vs {args.budget_ms:g} ms: {verdict}"
        f" (sandbox p99 with - without: {delta['sandbox_ms']['p99']} ms)"
    )
    figures = {
        "result": result,
        "added_ms": delta,
        "plugin_add_ms": own,
        "agent_ms": served,
        "load": {"before": load_before, "after": load_after},
        "budget_ms": args.budget_ms,
        "verdict": verdict,
    }
    print("RESULT " + json.dumps(figures))


if __name__ == "__main__":
    main()
