"""The network-policy-api CRDs on the real cluster: `cluster.sh up` installs deploy/crds/, the
API server serves the three kinds, and the podseg agent (under its shipped RBAC) found them
through discovery and watches them, and sees a ClusterNetworkPolicy created there."""

from __future__ import annotations

import json
from typing import Any

from tests.cluster import support

GROUP = "policy.networking.k8s.io"
KINDS = {
    "clusternetworkpolicies": "v1alpha2",
    "adminnetworkpolicies": "v1alpha1",
    "baselineadminnetworkpolicies": "v1alpha1",
}
AGENT_SA = "system:serviceaccount:podseg-system:podseg-agent"


def _agent_events(kube: support.Kube, name: str) -> list[dict[str, Any]]:
    out = []
    for line in kube.logs(support.PODSEG_NS, "daemonset/podseg-agent").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == name:
            out.append(entry)
    return out


def test_the_crds_are_served(kube: support.Kube) -> None:
    for resource, version in KINDS.items():
        crd = kube.json("get", f"crd/{resource}.{GROUP}")
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", resource
        served = json.loads(kube.run("get", "--raw", f"/apis/{GROUP}/{version}").stdout)
        assert resource in {r["name"] for r in served["resources"]}, (resource, version)
        assert served["resources"][0]["namespaced"] is False


def test_the_agent_watches_the_admin_kinds(kube: support.Kube, podseg: Any) -> None:
    for resource in KINDS:
        result = kube.run("auth", "can-i", "watch", f"{resource}.{GROUP}", f"--as={AGENT_SA}")
        assert result.stdout.strip() == "yes", resource
    watched = support.wait_until(
        lambda: {e["resource"] for e in _agent_events(kube, "admin_kind_watched")} >= set(KINDS),
        timeout=90,
        what="the agent logging admin_kind_watched for the three kinds",
    )
    assert watched
    assert not _agent_events(kube, "admin_kinds_not_served")
    assert not _agent_events(kube, "admin_discovery_failed")
    log = kube.logs(support.PODSEG_NS, "daemonset/podseg-agent")
    assert support.rbac_denials(log) == []

    name = "podseg-test-80"
    kube.apply(
        {
            "apiVersion": f"{GROUP}/v1alpha2",
            "kind": "ClusterNetworkPolicy",
            "metadata": {"name": name},
            "spec": {
                "tier": "Baseline",
                "priority": 999,
                "subject": {"namespaces": {"matchLabels": {"podseg-test": "none"}}},
                "ingress": [{"name": "a", "action": "Accept", "from": [{"namespaces": {}}]}],
            },
        }
    )
    try:
        support.wait_until(
            lambda: any(
                f"ClusterNetworkPolicy/{name}" in e.get("policies", [])
                for e in _agent_events(kube, "admin_policies")
            ),
            timeout=60,
            what="the agent holding the ClusterNetworkPolicy",
        )
    finally:
        kube.run("delete", f"clusternetworkpolicies.{GROUP}", name, check=False)
