"""The iptables backend on the real cluster: the DaemonSet as shipped, switched to
`PODSEG_BACKEND=iptables`, enforces a policy between kubelet-started pods.

Why on the real cluster: the sandbox tier's agent keeps root's capabilities, while the
DaemonSet drops all but a few; iptables' `set` match needs `NET_RAW`, and without it every
commit failed here (`Can't open socket to ipset.`) while every sandbox test passed.

The switch back to nftables is a plain env change, not the switch docs/operations.md prescribes:
the pods that lived through the iptables period (the responder's, for one) keep that backend's
rules until test_90's uninstall, whose cleanup DaemonSet must then remove them (it needs
`NET_RAW` for that, as the agent does)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.cluster import support
from tests.cluster.support import expect


def _backend(kube: support.Kube, backend: str) -> None:
    """The agent's backend through its env (unset: the default, nftables), rolled out."""
    env = "PODSEG_BACKEND-" if backend == "nftables" else f"PODSEG_BACKEND={backend}"
    kube.run("-n", support.PODSEG_NS, "set", "env", "daemonset/podseg-agent", "-c", "agent", env)
    kube.run(
        "-n", support.PODSEG_NS, "rollout", "status", "daemonset/podseg-agent", "--timeout=180s"
    )


def _started_with(kube: support.Kube) -> dict[str, Any]:
    pod = support.agent_pods(kube)[0]["metadata"]["name"]
    for line in kube.logs(support.PODSEG_NS, pod, "-c", "agent").splitlines():
        if '"agent_started"' in line:
            found: dict[str, Any] = json.loads(line)
            return found
    raise AssertionError("no agent_started line")


def test_the_iptables_backend_enforces_with_the_daemonsets_capabilities(
    kube: support.Kube, podseg: Any, namespace: Callable[..., str]
) -> None:
    _backend(kube, "iptables")
    try:
        assert _started_with(kube)["backend"] == "iptables"
        shop = namespace("ipt")
        ips = support.run_pods(
            kube, shop, {"web": {"app": "web"}, "api": {"app": "api"}, "db": {"app": "db"}}
        )
        expect(kube, shop, "db", ips["api"], 80, allowed=True)
        kube.apply(
            support.policy("deny", {"podSelector": {}, "policyTypes": ["Ingress"]}),
            support.web_to_api_policy(),
            namespace=shop,
        )
        expect(kube, shop, "web", ips["api"], 80, allowed=True)
        expect(kube, shop, "db", ips["api"], 80, allowed=False)
        expect(kube, shop, "api", ips["web"], 80, allowed=False)
        # a relabel moves a peer in and out of the allowed set (an ipset element)
        kube.run("-n", shop, "label", "pod", "db", "app=web", "--overwrite")
        expect(kube, shop, "db", ips["api"], 80, allowed=True)
        pod = support.agent_pods(kube)[0]["metadata"]["name"]
        log = kube.logs(support.PODSEG_NS, pod, "-c", "agent")
        assert "pod_not_enforced" not in log and "Can't open socket" not in log
        kube.run("delete", "namespace", shop, "--wait=true", timeout=240)
    finally:
        _backend(kube, "nftables")
    assert _started_with(kube)["backend"] == "nftables"
