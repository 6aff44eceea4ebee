"""Containment on the real cluster: quarantine set and lifted through the real API, and the
node guard against the real kubelet (10250 on the node's InternalIP, and on the CNI bridge
address no Node object lists), with its default exemptions."""

from __future__ import annotations

from typing import Any

from tests.cluster import support
from tests.cluster.support import expect

KUBELET = 10250


def test_quarantine_through_the_api(kube: support.Kube, podseg: Any, namespace: Any) -> None:
    ns = namespace("quarantine")
    ips = support.run_pods(kube, ns, {"a": {"app": "a"}, "b": {"app": "b"}})
    expect(kube, ns, "a", ips["b"], 80, allowed=True)

    kube.run("-n", ns, "label", "pod", "b", "podseg.io/quarantine=true")
    expect(kube, ns, "a", ips["b"], 80, allowed=False)
    expect(kube, ns, "b", ips["a"], 80, allowed=False)
    support.wait_until(
        lambda: kube.run(
            "-n", ns, "get", "events", "-o", "name",
            "--field-selector", "reason=Quarantined,involvedObject.name=b",
        ).stdout.strip(),
        timeout=30,
        what="the Quarantined Event of pod b",
    )  # fmt: skip
    assert support.metric(support.agent_metrics(kube), "podseg_quarantined_pods", namespace=ns) == 1

    # forensics: a may connect in, b still reaches nobody
    kube.run("-n", ns, "annotate", "pod", "b", f"podseg.io/quarantine-allow-from={ips['a']}/32")
    expect(kube, ns, "a", ips["b"], 80, allowed=True)
    expect(kube, ns, "b", ips["a"], 80, allowed=False)

    kube.run("-n", ns, "label", "pod", "b", "podseg.io/quarantine-")
    expect(kube, ns, "b", ips["a"], 80, allowed=True)
    support.wait_ready(kube, ns, ["b"])  # the kubelet's probes get through again


def test_the_node_guard_keeps_pods_from_the_kubelet(
    kube: support.Kube, podseg: Any, namespace: Any
) -> None:
    node_ip = kube.config.node_ip
    guarded = namespace("guarded")
    off = namespace("unguarded", {"podseg.io/node-guard": "off"})
    metadata = namespace("metadata", {"podseg.io/node-guard": "allow-metadata"})
    ip = support.run_pods(kube, guarded, {"p": {"app": "p"}})["p"]
    support.run_pods(kube, off, {"p": {"app": "p"}})
    support.run_pods(kube, metadata, {"p": {"app": "p"}})
    pod = kube.json("-n", guarded, "get", "pod", "p")
    # the pod's gateway: the node's address on the CNI bridge (kubelet probes come from it)
    routes = kube.run("-n", guarded, "exec", "p", "--", "ip", "route").stdout.split()
    bridge = routes[routes.index("via") + 1]
    assert pod["status"]["hostIP"] == node_ip

    # the kubelet answers on the node IP; on the bridge address nothing listens (REFUSED)
    expect(kube, off, "p", node_ip, KUBELET, allowed=True)
    assert support.connect(kube, off, "p", bridge, KUBELET) == support.REFUSED
    # guarded: both silently dropped, whatever a policy might allow
    kube.apply(
        support.policy(
            "allow-all-egress", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}
        ),
        namespace=guarded,
    )
    expect(kube, guarded, "p", node_ip, KUBELET, allowed=False)
    assert support.connect(kube, guarded, "p", bridge, KUBELET) == support.TIMEOUT
    expect(kube, metadata, "p", node_ip, KUBELET, allowed=False)
    # other node services (the API server's port here) follow the policies
    expect(kube, guarded, "p", node_ip, 6443, allowed=True)

    # allow-metadata: the metadata address is left out of the guard's table, the ports stay
    (guarded_tables,) = [support.tables_of(kube.config, ip)]
    assert "inet podseg" in " ".join(guarded_tables)
    listing = _ruleset(kube, ip)
    assert "node_guard_blocked4" in listing and "169.254.169.254" in listing
    meta_ip = kube.json("-n", metadata, "get", "pod", "p")["status"]["podIP"]
    meta_listing = _ruleset(kube, meta_ip)
    assert "node_guard_nodes4" in meta_listing and "169.254.169.254" not in meta_listing


def test_kube_system_is_exempt_by_default(kube: support.Kube, podseg: Any) -> None:
    """metrics-server and cloud controllers live in kube-system: the default configuration
    (deploy/containment.yaml) leaves its pods alone."""
    config = kube.run(
        "-n", support.PODSEG_NS, "get", "configmap", "podseg-containment",
        "-o", "jsonpath={.data.node-guard-exempt-namespaces}",
    ).stdout  # fmt: skip
    assert config == "kube-system"
    name = f"psg-ct-{support.namespace_name('ks')[-6:]}"
    try:
        support.run_pods(kube, "kube-system", {name: {"app": "psg-ct"}})
        expect(kube, "kube-system", name, kube.config.node_ip, KUBELET, allowed=True)
    finally:
        kube.run("-n", "kube-system", "delete", "pod", name, "--wait=false", check=False)


def _ruleset(kube: support.Kube, pod_ip: str) -> str:
    script = f"""
for f in /run/netns/*; do
  if ip -n "${{f##*/}}" -o addr show | grep -q " {pod_ip}/"; then
    nsenter --net="$f" nft list table inet podseg; exit 0
  fi
done; exit 3"""
    result = support.in_node(kube.config, script)
    assert result.returncode == 0, result.stderr
    return result.stdout
