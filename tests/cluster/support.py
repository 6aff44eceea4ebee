"""Helpers of the real-cluster tier: the one-node Kubernetes of scripts/cluster.sh, kubectl,
podseg installed from this checkout as a user installs it, agnhost pods made by the kubelet,
probes run inside them, and what a pod's network namespace holds.

Everything waits by polling with a deadline (`wait_until`), never by sleeping for readiness.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "scripts" / "cluster"
PODSEG_NS = "podseg-system"
UPSTREAM_IMAGE = "ghcr.io/podseg/podseg"
KUSTOMIZATIONS = {
    "base": ROOT / "deploy",
    **{k: ROOT / "deploy" / k for k in ("cleanup", "responder")},
}


def wait_until(check: Callable[[], T], *, timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}: {last!r}")
        time.sleep(interval)


@dataclasses.dataclass(frozen=True)
class Config:
    """The test cluster's settings, read from scripts/cluster/config.sh (with any PSG_CLUSTER_*
    overrides of the environment)."""

    kubectl: str
    kubeconfig: str
    mntns: str
    pidns: str
    node: str
    node_ip: str
    node_netns: str
    agnhost: str
    logs: str

    @classmethod
    def load(cls) -> Config:
        names = (
            "BIN",
            "KUBECONFIG_ADMIN",
            "MNTNS",
            "PIDNS",
            "NODE",
            "NODE_IP",
            "NETNS_FILE",
            "AGNHOST_IMAGE",
            "LOGS",
        )
        script = f". {CLUSTER / 'config.sh'}; printf '%s\\n' " + " ".join(f'"${n}"' for n in names)
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
        values = dict(zip(names, out.stdout.splitlines(), strict=True))
        return cls(
            kubectl=f"{values['BIN']}/kubectl",
            kubeconfig=values["KUBECONFIG_ADMIN"],
            mntns=values["MNTNS"],
            pidns=values["PIDNS"],
            node=values["NODE"],
            node_ip=values["NODE_IP"],
            node_netns=values["NETNS_FILE"],
            agnhost=values["AGNHOST_IMAGE"],
            logs=values["LOGS"],
        )


class Kube:
    """kubectl with the cluster's admin kubeconfig."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def run(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.config.kubectl, "--kubeconfig", self.config.kubeconfig, *args]
        result = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def apply(self, *documents: Mapping[str, Any], namespace: str | None = None) -> None:
        ns = ("-n", namespace) if namespace else ()
        self.run(*ns, "apply", "-f", "-", input=yaml.safe_dump_all(list(documents)))

    def ready(self) -> bool:
        try:
            return self.run("get", "--raw", "/readyz", check=False, timeout=15).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def logs(self, namespace: str, target: str, *extra: str) -> str:
        return self.run("-n", namespace, "logs", target, *extra).stdout


# -- podseg, installed as README "Install on a cluster" says -----------------------------------


def build_image() -> str:
    """Build (or reuse) the image from this checkout and import it into the cluster's
    containerd (scripts/cluster/podseg-image.sh); its reference."""
    result = subprocess.run(
        ["bash", str(CLUSTER / "podseg-image.sh"), "import"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"podseg-image.sh import failed: {result.stderr.strip()}")
    return result.stdout.strip().splitlines()[-1]


def write_overlays(directory: pathlib.Path, ref: str) -> dict[str, pathlib.Path]:
    """One kustomize overlay per podseg kustomization that only swaps the image reference."""
    name, _, tag = ref.rpartition(":")
    out = {}
    for key, source in KUSTOMIZATIONS.items():
        overlay = directory / key
        overlay.mkdir(parents=True, exist_ok=True)
        spec = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(source, overlay)],
            "images": [{"name": UPSTREAM_IMAGE, "newName": name, "newTag": tag}],
        }
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        out[key] = overlay
    return out


def install_commands(overlays: Mapping[str, pathlib.Path]) -> list[list[str]]:
    """README's install commands, `deploy/` being the overlay (tests/cluster/test_10_install.py
    checks they are the README's, word for word)."""
    return [
        ["apply", "-k", str(overlays["base"])],
        ["-n", PODSEG_NS, "rollout", "status", "daemonset/podseg-agent"],
    ]


def agent_pods(kube: Kube) -> list[dict[str, Any]]:
    listed = kube.json("-n", PODSEG_NS, "get", "pods", "-l", "app.kubernetes.io/component=agent")
    items: list[dict[str, Any]] = listed["items"]
    return items


def agent_metrics(kube: Kube) -> str:
    """The agent's /metrics, through the API server's pod proxy."""
    (pod,) = [p["metadata"]["name"] for p in agent_pods(kube) if _ready(p)]
    path = f"/api/v1/namespaces/{PODSEG_NS}/pods/{pod}:9808/proxy/metrics"
    return kube.run("get", "--raw", path).stdout


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of the exposition `text` (None when absent)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if match is None or match.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None


# 403 as a number of its own (not the digits of a timing such as "kernel_ms": 9.403), the
# words of a refusal, the agent's backing-off line, or the relay's 502.
_REFUSAL = re.compile(r'(?<![\d.])403(?![\d.])|[Ff]orbidden|api_error_backing_off|"status": 502')


def rbac_denials(log: str) -> list[str]:
    """Lines of a podseg log that show the API server refusing a request."""
    return [line for line in log.splitlines() if _REFUSAL.search(line)]


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


# -- namespaces and agnhost pods ------------------------------------------------------------


def namespace_name(prefix: str) -> str:
    return f"psg-ct-{prefix}-{secrets.token_hex(3)}"


def create_namespace(kube: Kube, name: str, labels: Mapping[str, str] | None = None) -> str:
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": dict(labels or {})},
        }
    )
    return name


def agnhost_pod(
    config: Config, name: str, labels: Mapping[str, str], *, args: Iterable[str] | None = None
) -> dict[str, Any]:
    """An agnhost pod serving HTTP on 80 (readiness-probed by the kubelet: a probe the agent
    must let in under any ingress policy) and UDP on 81."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "agnhost",
                    "image": config.agnhost,
                    "imagePullPolicy": "Never",
                    "args": list(args or ["netexec", "--http-port=80", "--udp-port=81"]),
                    "ports": [
                        {"name": "http", "containerPort": 80},
                        {"name": "udp", "containerPort": 81, "protocol": "UDP"},
                    ],
                    "readinessProbe": {
                        "httpGet": {"path": "/healthz", "port": 80},
                        "periodSeconds": 1,
                        "failureThreshold": 2,
                    },
                }
            ],
        },
    }


def run_pods(kube: Kube, namespace: str, pods: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """Create agnhost pods {name: labels}; wait until every one is Ready; {name: pod IP}."""
    kube.apply(
        *(agnhost_pod(kube.config, n, labels) for n, labels in pods.items()), namespace=namespace
    )
    return wait_ready(kube, namespace, list(pods))


def wait_ready(
    kube: Kube, namespace: str, names: list[str], timeout: float = 120
) -> dict[str, str]:
    def ready() -> dict[str, str] | None:
        listed = kube.json("-n", namespace, "get", "pods")["items"]
        found = {p["metadata"]["name"]: p for p in listed}
        if not all(n in found and _ready(found[n]) for n in names):
            return None
        return {n: found[n]["status"]["podIP"] for n in names}

    return wait_until(ready, timeout=timeout, what=f"pods {names} in {namespace} Ready")


def service(name: str, selector: Mapping[str, str], port: int, target: int | str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": dict(selector),
            "ports": [{"port": port, "targetPort": target, "protocol": "TCP"}],
        },
    }


def policy(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name},
        "spec": dict(spec),
    }


def web_to_api_policy() -> dict[str, Any]:
    """`web-to-api`: pods labelled app=web may reach app=api pods on TCP 80."""
    return policy(
        "web-to-api",
        {
            "podSelector": {"matchLabels": {"app": "api"}},
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                    "ports": [{"port": 80}],
                }
            ],
        },
    )


# -- probes from inside pods ------------------------------------------------------------------

OK, TIMEOUT, REFUSED = "OK", "TIMEOUT", "REFUSED"


def connect(
    kube: Kube,
    namespace: str,
    pod: str,
    address: str,
    port: int,
    protocol: str = "tcp",
    timeout: str = "1s",
) -> str:
    """`agnhost connect` from inside `pod`: OK, TIMEOUT (a silent drop), REFUSED or the error."""
    target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    result = kube.run(
        "-n", namespace, "exec", pod, "--", "/agnhost", "connect", target,
        f"--timeout={timeout}", f"--protocol={protocol}",
        check=False, timeout=60,
    )  # fmt: skip
    if result.returncode == 0:
        return OK
    text = (result.stderr + result.stdout).strip()
    for word in (TIMEOUT, REFUSED):
        if word in text:
            return word
    return text or f"exit {result.returncode}"


def expect(
    kube: Kube,
    namespace: str,
    pod: str,
    address: str,
    port: int,
    allowed: bool,
    *,
    protocol: str = "tcp",
    timeout: float = 30,
) -> None:
    """Poll until `pod` reaches (OK) or is silently denied (TIMEOUT) `address:port`, as wanted.
    A denial must be a timeout: podseg drops, it never rejects."""
    want = OK if allowed else TIMEOUT
    seen: list[str] = []

    def check() -> bool:
        seen.append(connect(kube, namespace, pod, address, port, protocol))
        return seen[-1] == want

    wait_until(
        check,
        timeout=timeout,
        what=f"{namespace}/{pod} -> {address}:{port}/{protocol} {want} (saw {seen[-3:]})",
        interval=0.2,
    )


# -- what pod network namespaces hold (inside the node's mount namespace) ---------------------


def in_node(config: Config, script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A shell script in the node's mount namespace, where /run/netns holds the pods'."""
    return subprocess.run(
        ["nsenter", f"--mount={config.mntns}", "--", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def pod_namespaces_tables(config: Config) -> dict[str, dict[str, Any]]:
    """{netns name: {"addrs": [...], "tables": [...]}} for every pod namespace of the node."""
    script = r"""
for f in /run/netns/*; do
  [ -e "$f" ] || continue
  n=${f##*/}
  echo "== $n"
  ip -n "$n" -o addr show | awk '{print "addr " $4}'
  nsenter --net="$f" nft list tables | sed 's/^/table /'
done
"""
    result = in_node(config, script)
    assert result.returncode == 0, result.stderr
    out: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in result.stdout.splitlines():
        if line.startswith("== "):
            current = out.setdefault(line[3:], {"addrs": [], "tables": []})
        elif current is not None and line.startswith("addr "):
            current["addrs"].append(line[5:].split("/")[0])
        elif current is not None and line.startswith("table "):
            current["tables"].append(line[6:].strip())
    return out


def tables_of(config: Config, pod_ip: str) -> list[str]:
    """The nftables tables in the namespace holding `pod_ip`."""
    for info in pod_namespaces_tables(config).values():
        if pod_ip in info["addrs"]:
            tables: list[str] = info["tables"]
            return tables
    raise AssertionError(f"no pod namespace holds {pod_ip}")


NODE_CONFLIST = "/etc/cni/net.d/10-psg.conflist"  # the node's own (scripts/cluster.sh writes it)
# The node's conflist as podseg's install found it (read before the first install of the
# session; `podseg cni uninstall` must put exactly this back).
ORIGINAL_CONFLIST: dict[str, str] = {}


def node_file(config: Config, path: str) -> str | None:
    """A file of the node (its mount namespace: /etc/cni, /opt/cni are the node's own)."""
    result = in_node(config, f"cat {path}")
    return result.stdout if result.returncode == 0 else None


def remember_conflist(config: Config) -> None:
    """Keep the node's conflist before podseg chains podseg-cni into it (once a session)."""
    text = node_file(config, NODE_CONFLIST)
    if text is not None and "podseg-cni" not in text:
        ORIGINAL_CONFLIST.setdefault(NODE_CONFLIST, text)


def podseg_tables(tables: Iterable[str]) -> list[str]:
    return [t for t in tables if t.endswith(" podseg")]


def node_curl(config: Config, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """curl from the node's network namespace (where Services and pod IPs are reachable)."""
    return subprocess.run(
        ["nsenter", f"--net={config.node_netns}", "--", "curl", "-sS", "--max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ensure_monitoring(kube: Kube) -> None:
    """prometheus-operator's CRDs and `kubectl apply -k deploy/monitoring/` (README's optional
    install step)."""
    crds = subprocess.run(
        ["bash", str(CLUSTER / "podseg.sh"), "crds"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert crds.returncode == 0, crds.stderr
    kube.run("apply", "-k", str(ROOT / "deploy" / "monitoring"), "--validate=strict")
