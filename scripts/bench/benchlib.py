"""Shared helpers of the benchmarks in scripts/bench: percentiles, targets, the result line.

Every benchmark prints human-readable figures and, last, one line `RESULT {json}` with the
same figures, so `scripts/bench.sh` can collect them and `tests/e2e/test_bench_quick.py`
can check the shape of each benchmark's output in `--quick` mode.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

from agent import store
from agent.k8s import watch

BACKENDS = ("nftables", "iptables")


def common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="nftables",
        help="dataplane backend, passed through to the agent (--backend)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a CI smoke test")


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile by nearest rank (q=0.99: p99); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": statistics.median(values) if values else float("nan"),
        "p99": pct(values, 0.99),
        "max": max(values) if values else float("nan"),
    }


def target(name: str, measured: str, met: bool, goal: str) -> dict[str, Any]:
    """One target (a goal a benchmark checks), printed and reported as met or not with its
    measured figure."""
    verdict = "MET" if met else "NOT MET"
    print(f"  target {name}: {goal}; measured {measured} -> {verdict}")
    return {"target": name, "goal": goal, "measured": measured, "met": met}


def result(benchmark: str, args: argparse.Namespace, **figures: Any) -> None:
    payload = {"benchmark": benchmark, "backend": args.backend, "quick": args.quick, **figures}
    print("RESULT " + json.dumps(payload, sort_keys=True, default=str))


def store_of(objs: Sequence[dict[str, Any]]) -> store.Store:
    """A store loaded from API objects (Namespaces, Pods, NetworkPolicies) as one relist per
    kind, as an agent's start does."""
    by_kind = {"Namespace": "namespaces", "Pod": "pods", "NetworkPolicy": "networkpolicies"}
    st = store.Store()
    for kind in store.KINDS:
        items = [o for o in objs if by_kind.get(o["kind"]) == kind]
        st.apply(watch.Relist(kind, items, "1", time.monotonic()), store.Change())
    return st


def realistic_pod(
    name: str,
    namespace: str,
    labels: dict[str, str],
    ip: str | None,
    node: str,
    *,
    serial: int = 0,
) -> dict[str, Any]:
    """A Deployment's pod as kube-apiserver returns it (about 7 KB of JSON): three containers
    with ports, probes, env and resources, the projected service-account volume, tolerations,
    five conditions, container statuses and the managedFields of the controller and the kubelet.
    Benchmarks that claim a cost per pod measure it on these, not on a bare name and label."""
    uid = f"{serial:08x}-5a1e-4c0d-9e1f-{serial:012x}"
    template_hash = "7d9c8b6f5"
    stamp = "2026-12-01T10:00:00Z"
    owner = f"{name.rsplit('-', 1)[0]}-{template_hash}"
    containers = [
        {
            "name": cname,
            "image": f"registry.example.com/team/{cname}:1.{serial % 7}.3",
            "imagePullPolicy": "IfNotPresent",
            "ports": [{"name": f"p{port}", "containerPort": port, "protocol": "TCP"}],
            "env": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "LOG_LEVEL", "value": "info"},
            ],
            "resources": {
                "requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"memory": "256Mi"},
            },
            "readinessProbe": {
                "httpGet": {"path": "/healthz", "port": port, "scheme": "HTTP"},
                "periodSeconds": 10,
                "timeoutSeconds": 1,
                "successThreshold": 1,
                "failureThreshold": 3,
            },
            "volumeMounts": [
                {
                    "name": "kube-api-access-x7k2p",
                    "readOnly": True,
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                }
            ],
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
        }
        for cname, port in (("app", 8080), ("sidecar", 9090), ("metrics", 9100))
    ]
    status: dict[str, Any] = {
        "phase": "Running" if ip else "Pending",
        "conditions": [
            {"type": kind, "status": "True", "lastProbeTime": None, "lastTransitionTime": stamp}
            for kind in (
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled",
            )
        ],
        "hostIP": "198.19.0.2",
        "hostIPs": [{"ip": "198.19.0.2"}],
        "startTime": stamp,
        "qosClass": "Burstable",
        "containerStatuses": [
            {
                "name": c["name"],
                "state": {"running": {"startedAt": stamp}},
                "lastState": {},
                "ready": True,
                "restartCount": 0,
                "image": c["image"],
                "imageID": f"{c['image']}@sha256:{serial:064x}",
                "containerID": f"containerd://{serial:064x}",
                "started": True,
            }
            for c in containers
        ],
    }
    if ip:
        status.update(podIP=ip, podIPs=[{"ip": ip}])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "generateName": f"{owner}-",
            "namespace": namespace,
            "uid": uid,
            "resourceVersion": str(1000 + serial),
            "creationTimestamp": stamp,
            "labels": {**labels, "pod-template-hash": template_hash},
            "annotations": {"kubectl.kubernetes.io/restartedAt": stamp},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": owner,
                    "uid": f"{serial:08x}-0000-4000-8000-000000000000",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "managedFields": [
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": stamp,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {
                        "f:metadata": {
                            "f:generateName": {},
                            "f:labels": {f"f:{k}": {} for k in labels},
                            "f:ownerReferences": {},
                        },
                        "f:spec": {
                            f'f:containers{{"name":"{c["name"]}"}}': {
                                ".": {},
                                "f:image": {},
                                "f:ports": {},
                                "f:readinessProbe": {},
                                "f:resources": {},
                            }
                            for c in containers
                        },
                    },
                },
                {
                    "manager": "kubelet",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": stamp,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {
                        "f:status": {
                            "f:conditions": {},
                            "f:containerStatuses": {},
                            "f:hostIP": {},
                            "f:podIP": {},
                            "f:podIPs": {},
                            "f:startTime": {},
                        }
                    },
                    "subresource": "status",
                },
            ],
        },
        "spec": {
            "volumes": [
                {
                    "name": "kube-api-access-x7k2p",
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                            {
                                "configMap": {
                                    "name": "kube-root-ca.crt",
                                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                                }
                            },
                        ],
                        "defaultMode": 420,
                    },
                }
            ],
            "containers": containers,
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "nodeName": node,
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {
                    "key": f"node.kubernetes.io/{taint}",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }
                for taint in ("not-ready", "unreachable")
            ],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": status,
    }
