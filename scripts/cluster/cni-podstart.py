#!/usr/bin/env python3
"""Pod start on the test cluster with and without podseg-cni chained (docs/cni.md).

Needs the cluster up with podseg installed (`bash scripts/cluster.sh podseg install`), so the
node's conflist chains podseg-cni and keeps the original beside it. Creates pods one at a time
in blocks that alternate between the chained conflist and the original one (swapped in the
node's /etc/cni/net.d, as a CNI's installer would), and reports per block:

* the sandbox time: containerd's RunPodSandbox, from its log (CNI ADD of every plugin);
* create -> Running: from `kubectl apply` to the pod's phase Running, polled every 50 ms.

    python3 scripts/cluster/cni-podstart.py [--pods 10] [--blocks 4]

The chained conflist is back in place at the end. Prints one `RESULT {json}` line.
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
    while True:
        phase = kubectl("-n", ns, "get", "pod", name, "-o", "jsonpath={.status.phase}")
        if phase == "Running":
            return (time.monotonic() - t0) * 1000
        if time.monotonic() - t0 > 120:
            raise SystemExit(f"{ns}/{name} not Running within 120 s")
        time.sleep(0.05)


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


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"median": round(statistics.median(ordered), 1), "p99": round(p99, 1), "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10, help="pods per block")
    parser.add_argument("--blocks", type=int, default=4, help="blocks, alternating (even)")
    args = parser.parse_args()
    in_node(f"cp {CONFLIST} {CONFLIST}.bench-chained")  # an extension containerd ignores
    chained = {"with": [], "without": []}  # type: dict[str, list[tuple[float, float]]]
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
            kubectl("delete", "namespace", ns, "--wait=false")
            print(f"block {block} {mode:8} sandbox {summary([s for s, _ in chained[mode]])}")
    finally:
        in_node(f"mv {CONFLIST}.bench-chained {CONFLIST}")
    result = {
        mode: {
            "sandbox_ms": summary([s for s, _ in pairs]),
            "create_to_running_ms": summary([w for _, w in pairs]),
        }
        for mode, pairs in chained.items()
    }
    delta = {
        key: round(result["with"][key]["median"] - result["without"][key]["median"], 1)
        for key in ("sandbox_ms", "create_to_running_ms")
    }
    for mode, row in result.items():
        running = row["create_to_running_ms"]
        print(f"{mode:8} sandbox {row['sandbox_ms']}  create->Running {running}")
    print(f"median delta (with - without): {delta}")
    print("RESULT " + json.dumps({"result": result, "median_delta_ms": delta}))


if __name__ == "__main__":
    main()
