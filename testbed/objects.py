"""API objects shaped as a real API server returns them, for benchmarks and tests that claim a
cost per object: a figure measured on bare objects (a name, a label, an IP) does not hold for a
cluster whose pods carry statuses, probes and managedFields."""

from __future__ import annotations

from typing import Any


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
    Used where a cost per pod is claimed."""
    uid = f"{serial:08x}-5a1e-4c0d-9e1f-{serial:012x}"
    template_hash = "7d9c8b6f5"
    stamp = "2026-12-01T10:00:00Z"
    owner = f"{name.rsplit('-', 1)[0]}-{template_hash}"
    containers = _containers(serial)
    status = _status(containers, ip, stamp, serial)
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
            "managedFields": _managed_fields(labels, containers, stamp),
        },
        "spec": _spec(containers, node),
        "status": status,
    }


def _containers(serial: int) -> list[dict[str, Any]]:
    return [
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


def _status(
    containers: list[dict[str, Any]], ip: str | None, stamp: str, serial: int
) -> dict[str, Any]:
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
    return status


def _managed_fields(
    labels: dict[str, str], containers: list[dict[str, Any]], stamp: str
) -> list[dict[str, Any]]:
    return [
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
    ]


def _spec(containers: list[dict[str, Any]], node: str) -> dict[str, Any]:
    return {
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
    }
