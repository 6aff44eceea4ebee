"""`podseg status` and policy status on the real cluster: the operator commands run from this
checkout with the admin kubeconfig, against the agent the DaemonSet runs; the policy-status
writer is elected with a real Lease and posts one NoPodsSelected Event."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tests.cluster import support


def _podseg(kube: support.Kube, *args: str) -> tuple[int, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "agent", *args, "-o", "json"],
        env={**os.environ, "KUBECONFIG": kube.config.kubeconfig},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_policy_status_on_the_real_cluster(kube: support.Kube, podseg: Any, namespace: Any) -> None:
    ns = namespace("pstatus")
    support.run_pods(kube, ns, {"web": {"app": "web"}})
    kube.apply(
        support.policy("web", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]}),
        support.policy("nobody", {"podSelector": {"matchLabels": {"app": "gone"}}}),
        namespace=ns,
    )
    code, agents = _podseg(kube, "status")
    assert code == 0 and [a["node"] for a in agents] == [kube.config.node], agents
    assert agents[0]["ready"] and agents[0]["pods"]["enforced"] >= 1

    def statuses() -> dict[str, Any] | None:
        rows = {r["name"]: r for r in _podseg(kube, "policies")[1] if r["namespace"] == ns}
        return rows if rows.get("web", {}).get("realized") else None

    rows = support.wait_until(statuses, timeout=60, what="web realized on the node")
    assert rows["web"]["selectedPods"] == 1 and rows["web"]["nodes"] == [kube.config.node]
    assert rows["nobody"]["selectedPods"] == 0
    leases = kube.json("-n", "podseg-system", "get", "leases")["items"]
    names = {item["metadata"]["name"]: item for item in leases}
    assert names["podseg-policy-status"]["spec"]["holderIdentity"] == kube.config.node
    assert f"podseg-node-{kube.config.node}" in names

    def warned() -> list[Any]:
        items = kube.json("-n", ns, "get", "events")["items"]
        return [e for e in items if e["reason"] == "NoPodsSelected"]

    (event,) = support.wait_until(warned, timeout=60, what="one NoPodsSelected Event")
    assert event["involvedObject"]["name"] == "nobody"
    assert support.rbac_denials(kube.logs("podseg-system", "daemonset/podseg-agent")) == []
