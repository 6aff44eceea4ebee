"""`podseg demo`: the agent enforcing policies on a sandbox node, step by step.

It builds a node of network namespaces with four pods in two namespaces, starts the embedded
API emulator and a real `podseg agent` process, then applies sample policies one at a time and
prints the live TCP connectivity matrix after each (probed from inside the pods), with the
time the agent took from seeing the change to the rules being in the kernel. Three steps add
the admin tiers (ClusterNetworkPolicy): an Admin Deny above a namespace's own allow, a
Baseline Deny, and a NetworkPolicy above that Baseline. A last step puts a Service in front of
`db` (the sandbox service proxy translates its ClusterIP on the node) and shows egress allowed
through it; the very last one records a namespace's traffic in visibility mode, turns it into
policies with `podseg recommend` and enforces them. It checks every result against what the
policies mean and exits non-zero on any surprise. Needs root.
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import yaml

from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import probe

PODS = {
    "shop/web": {"app": "web"},
    "shop/api": {"app": "api"},
    "shop/db": {"app": "db"},
    "ops/monitor": {"app": "monitor"},
}
PORTS = (80, 81)
Allowed = Callable[[str, str, int], bool]


def _deny_shop(c: sandbox_cluster.SandboxCluster) -> None:
    c.apply_policy(
        {
            "metadata": {"namespace": "shop", "name": "default-deny"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        }
    )


def _allow_chain(c: sandbox_cluster.SandboxCluster) -> None:
    for dst, src, port in (("api", "web", 80), ("db", "api", 81)):
        c.apply_policy(
            {
                "metadata": {"namespace": "shop", "name": f"{src}-to-{dst}"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": dst}},
                    "ingress": [
                        {
                            "from": [{"podSelector": {"matchLabels": {"app": src}}}],
                            "ports": [{"port": port, "protocol": "TCP"}],
                        }
                    ],
                },
            }
        )


def _allow_ops(c: sandbox_cluster.SandboxCluster) -> None:
    c.apply_policy(
        {
            "metadata": {"namespace": "shop", "name": "monitoring"},
            "spec": {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}}}],
                        "ports": [{"port": 81, "protocol": "TCP"}],
                    }
                ],
            },
        }
    )


def _relabel_api(c: sandbox_cluster.SandboxCluster) -> None:
    c.label_pod("shop/api", {"app": "api-canary"})


def _admin_deny(c: sandbox_cluster.SandboxCluster) -> None:
    c.apply_admin_policy(
        "ClusterNetworkPolicy",
        "no-81-into-shop",
        {
            "tier": "Admin",
            "priority": 10,
            "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}}},
            "ingress": [
                {
                    "name": "deny-81-from-ops",
                    "action": "Deny",
                    "from": [{"namespaces": {"matchLabels": {"team": "ops"}}}],
                    "protocols": [{"tcp": {"destinationPort": {"number": 81}}}],
                }
            ],
        },
    )


def _baseline_deny(c: sandbox_cluster.SandboxCluster) -> None:
    c.apply_admin_policy(
        "ClusterNetworkPolicy",
        "default-deny",
        {
            "tier": "Baseline",
            "priority": 100,
            "subject": {"namespaces": {}},
            "ingress": [{"name": "deny-all", "action": "Deny", "from": [{"namespaces": {}}]}],
        },
    )


def _allow_monitor(c: sandbox_cluster.SandboxCluster) -> None:
    c.apply_policy(
        {
            "metadata": {"namespace": "ops", "name": "monitor-from-web"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "monitor"}},
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {"matchLabels": {"team": "shop"}},
                                "podSelector": {"matchLabels": {"app": "web"}},
                            }
                        ],
                        "ports": [{"port": 80, "protocol": "TCP"}],
                    }
                ],
            },
        }
    )


def _chain(src: str, dst: str, port: int) -> bool:
    """The connections `_allow_chain` allows: web -> api on 80, api -> db on 81."""
    return (src, dst, port) in {("shop/web", "shop/api", 80), ("shop/api", "shop/db", 81)}


def _isolated(dst: str) -> bool:
    """Whether `dst` is isolated for ingress once `_deny_shop` applies."""
    return dst.startswith("shop/")


def _steps() -> list[tuple[str, Callable[[sandbox_cluster.SandboxCluster], None], Allowed]]:
    """The demo's steps: title, the change it makes, and what is allowed after it."""
    return [
        ("no policies: everything reaches everything", lambda c: None, lambda s, d, p: True),
        (
            "default-deny ingress in namespace shop",
            _deny_shop,
            lambda s, d, p: not _isolated(d),
        ),
        (
            "allow web -> api on 80, api -> db on 81",
            _allow_chain,
            lambda s, d, p: not _isolated(d) or _chain(s, d, p),
        ),
        (
            "allow namespace team=ops to every shop pod on 81",
            _allow_ops,
            lambda s, d, p: not _isolated(d) or _chain(s, d, p) or (s == "ops/monitor" and p == 81),
        ),
        (
            "relabel shop/api app=api-canary: it leaves both allow rules",
            _relabel_api,
            lambda s, d, p: not _isolated(d) or (s == "ops/monitor" and p == 81),
        ),
        (
            "Admin tier (ClusterNetworkPolicy): deny ops -> shop on 81, above shop's own allow",
            _admin_deny,
            lambda s, d, p: not _isolated(d),
        ),
        (
            "Baseline tier: deny all ingress where no NetworkPolicy decides (ops/monitor)",
            _baseline_deny,
            lambda s, d, p: False,
        ),
        (
            "ops' own NetworkPolicy: web -> monitor on 80, above the Baseline deny",
            _allow_monitor,
            lambda s, d, p: (s, d, p) == ("shop/web", "ops/monitor", 80),
        ),
    ]


def _expected(pods: list[Any], allowed: Allowed) -> dict[probe.MatrixKey, str]:
    return {
        (s.key, d.key, port, "tcp"): probe.OK
        if s.key == d.key or allowed(s.key, d.key, port)
        else probe.TIMEOUT
        for s in pods
        for d in pods
        for port in PORTS
    }


def _service_step(cluster: sandbox_cluster.SandboxCluster, number: int) -> bool:
    """Egress through a Service: the sandbox proxy DNATs the ClusterIP in the node namespace,
    podseg allows it in web's namespace because its backend (db:81) is allowed."""
    cluster.start_service_proxy()
    svc = cluster.apply_service(
        {
            "metadata": {"namespace": "shop", "name": "db"},
            "spec": {"selector": {"app": "db"}, "ports": [{"port": 5432, "targetPort": 81}]},
        }
    )
    cluster_ip = svc["spec"]["clusterIP"]
    cluster.apply_policy(
        {
            "metadata": {"namespace": "shop", "name": "web-egress"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                        "ports": [{"port": 81, "protocol": "TCP"}],
                    }
                ],
            },
        }
    )
    cluster.apply_policy(
        {
            "metadata": {"namespace": "shop", "name": "web-to-db"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
            },
        }
    )
    db, api = cluster.pods["shop/db"], cluster.pods["shop/api"]
    checks = [
        ("shop/web", cluster_ip, 5432, probe.OK, "web -> Service db (ClusterIP)"),
        ("shop/web", db.ipv4, 81, probe.OK, "web -> db pod"),
        ("shop/web", api.ipv4, 80, probe.TIMEOUT, "web -> api pod (egress isolated)"),
        ("ops/monitor", cluster_ip, 5432, probe.TIMEOUT, "monitor -> Service db (Admin tier)"),
        ("shop/api", cluster_ip, 5432, probe.TIMEOUT, "api -> Service db (db ingress)"),
    ]
    print(f"step {number}: Service shop/db {cluster_ip}:5432 -> db:81 (sandbox proxy: DNAT in")
    print("  the node namespace); web may egress only to app=db on 81, db admits web")
    deadline = time.monotonic() + 15
    while True:
        verdicts = [
            probe.probe(cluster.pods[src], ip, port, "tcp", timeout=0.6)
            for src, ip, port, _, _ in checks
        ]
        ok = verdicts == [want for _, _, _, want, _ in checks]
        if ok or time.monotonic() > deadline:
            break
    for (_, ip, port, want, title), got in zip(checks, verdicts, strict=True):
        mark = "" if got == want else f"   UNEXPECTED (wanted {want})"
        print(f"  {title:36s} {ip + ':' + str(port):20s} {got}{mark}")
    print("  result: " + ("as the policies say" if ok else "UNEXPECTED"))
    print()
    return ok


def _podseg(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=120
    )


def _lab_flows(cluster: sandbox_cluster.SandboxCluster, agent_url: str, path: str) -> bool:
    """`podseg flows -n lab -o json` into `path`; whether it holds lab's allowed connection."""
    done = _podseg(
        "flows", "-n", "lab", "--agent", agent_url, "-o", "json", "--kubeconfig", cluster.kubeconfig
    )
    if done.returncode != 0:
        return False
    pathlib.Path(path).write_text(done.stdout)
    flows = json.loads(done.stdout).get("flows", [])
    return any(f.get("verdict") == "allowed" and f.get("port") == 80 for f in flows)


def _visibility_step(cluster: sandbox_cluster.SandboxCluster, number: int, agent_url: str) -> bool:
    """See the traffic first: namespace lab in visibility mode, its traffic recorded, `podseg
    recommend` turns it into policies, then enforce: what was seen still works, anything new
    is dropped."""
    cluster.ensure_namespace("lab", {"podseg.io/mode": "visibility"})
    lab = {name: cluster.add_pod("lab", name, {"app": name}) for name in ("front", "back", "jump")}
    print(f"step {number}: namespace lab in visibility mode: front talks to back on 80; then")
    print("  podseg flows -> podseg recommend -> apply -> enforce")
    with tempfile.TemporaryDirectory(prefix="psg-demo-") as tmp:
        flows_file, policies = f"{tmp}/flows.json", f"{tmp}/lab.yaml"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            probe.probe(lab["front"], lab["back"].ipv4, 80, "tcp", timeout=0.6)
            if _lab_flows(cluster, agent_url, flows_file):
                break
        recommended = _podseg("recommend", "-n", "lab", "--flows", flows_file)
        pathlib.Path(policies).write_text(recommended.stdout)
        docs = [d for d in yaml.safe_load_all(recommended.stdout) if d]
        print(f"  recommended: {', '.join(d['metadata']['name'] for d in docs) or 'nothing'}")
        for doc in docs:
            cluster.apply_policy({"metadata": doc["metadata"], "spec": doc["spec"]})
        whatif = _podseg("whatif", policies, "--flows", flows_file)
        print(f"  whatif on the recorded flows: exit {whatif.returncode} (0: nothing seen breaks)")
    cluster.label_namespace("lab", {"podseg.io/mode": None})
    checks = [
        ("front", "back", 80, probe.OK, "front -> back:80 (seen)"),
        ("front", "back", 81, probe.TIMEOUT, "front -> back:81 (new port)"),
        ("jump", "back", 80, probe.TIMEOUT, "jump -> back:80 (new peer)"),
    ]
    deadline = time.monotonic() + 15
    while True:
        verdicts = [
            probe.probe(lab[src], lab[dst].ipv4, port, "tcp", timeout=0.6)
            for src, dst, port, _, _ in checks
        ]
        ok = verdicts == [want for *_, want, _ in checks] and whatif.returncode == 0
        if ok or time.monotonic() > deadline:
            break
    for (*_, want, title), got in zip(checks, verdicts, strict=True):
        mark = "" if got == want else f"   UNEXPECTED (wanted {want})"
        print(f"  enforced: {title:32s} {got}{mark}")
    print("  result: " + ("as the policies say" if ok else "UNEXPECTED"))
    print()
    return ok


def main() -> int:
    if os.geteuid() != 0:
        print("podseg demo needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    started = time.monotonic()
    surprises = 0
    with sandbox_cluster.SandboxCluster(nodes=("node-1",), ipv6=False) as cluster:
        cluster.ensure_namespace("shop", {"team": "shop"})
        cluster.ensure_namespace("ops", {"team": "ops"})
        for key, labels in PODS.items():
            namespace, name = key.split("/")
            cluster.add_pod(namespace, name, labels)
        print(f"sandbox node ready: {len(PODS)} pods, API emulator at {cluster.emulator.url}")
        cluster.install_admin_crds()  # ClusterNetworkPolicy & co. (deploy/crds/)
        agent = cluster.start_agent("node-1")
        print(f"podseg agent ready (metrics on 127.0.0.1:{agent.metrics_port})\n")
        pods = [cluster.pods[key] for key in PODS]
        for number, (title, action, allowed) in enumerate(_steps()):
            applied_before = len(agent.events("ruleset_applied"))
            action(cluster)
            expected = _expected(pods, allowed)
            deadline = time.monotonic() + 15
            while True:
                matrix = probe.probe_matrix(pods, ports=PORTS, protocols=("tcp",), timeout=0.6)
                if matrix == expected or time.monotonic() > deadline:
                    break
            ok = matrix == expected
            surprises += not ok
            applies = agent.events("ruleset_applied")[applied_before:]
            latencies = [e["latency_ms"] for e in applies if e.get("latency_ms") is not None]
            print(f"step {number}: {title}")
            print(probe.format_matrix(matrix, expected=None if ok else expected))
            if latencies:
                print(
                    f"  agent: {len(applies)} pod rulesets updated, event->kernel "
                    f"median {statistics.median(latencies):.1f} ms, max {max(latencies):.1f} ms"
                )
            print("  result: " + ("as the policies say" if ok else "UNEXPECTED (cells marked *)"))
            print()
        surprises += not _service_step(cluster, len(_steps()))
        agent_url = f"http://127.0.0.1:{agent.metrics_port}"
        surprises += not _visibility_step(cluster, len(_steps()) + 1, agent_url)
    elapsed = time.monotonic() - started
    print(f"demo finished in {elapsed:.1f} s; sandbox removed; {surprises} unexpected matrices")
    return 1 if surprises else 0
