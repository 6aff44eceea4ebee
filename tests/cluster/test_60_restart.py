"""An agent restart on the real cluster (`kubectl rollout restart`, the way an upgrade replaces
it) with probers running the whole time: the denied pair never connects, the allowed pair
never stops connecting (rules stay in the kernel between agents; the new agent adopts them)."""

from __future__ import annotations

import time
from typing import Any

from tests.cluster import support

PROBE_LOOP = (
    "while true; do "
    "if /agnhost connect --timeout=1s {target}:80 >/dev/null 2>&1; "
    'then echo "$(date +%s) OPEN"; else echo "$(date +%s) CLOSED"; fi; '
    "sleep 0.2; done"
)


def _prober(
    config: support.Config, name: str, labels: dict[str, str], target: str
) -> dict[str, Any]:
    pod = support.agnhost_pod(config, name, labels)
    container = pod["spec"]["containers"][0]
    container["command"] = ["/bin/sh", "-c", PROBE_LOOP.format(target=target)]
    container.pop("args")
    container.pop("readinessProbe")
    return pod


def _lines(kube: support.Kube, ns: str, pod: str, since: int) -> list[str]:
    out = kube.logs(ns, pod)
    return [
        line.split()[1]
        for line in out.splitlines()
        if len(line.split()) == 2 and int(line.split()[0]) >= since
    ]


def test_rollout_restart_opens_no_hole_and_closes_nothing(
    kube: support.Kube, podseg: Any, namespace: Any
) -> None:
    ns = namespace("restart")
    kube.apply(
        support.policy(
            "only-a",
            {
                "podSelector": {"matchLabels": {"app": "server"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}],
            },
        ),
        namespace=ns,
    )
    server = support.run_pods(kube, ns, {"server": {"app": "server"}})["server"]
    kube.apply(
        _prober(kube.config, "allowed", {"app": "a"}, server),
        _prober(kube.config, "denied", {"app": "d"}, server),
        namespace=ns,
    )
    support.wait_until(
        lambda: all(
            p["status"].get("phase") == "Running"
            for p in kube.json("-n", ns, "get", "pods")["items"]
        ),
        timeout=120,
        what="the probers running",
    )
    # from the moment the agent has let the allowed prober in, both pairs are steady
    support.wait_until(
        lambda: "OPEN" in _lines(kube, ns, "allowed", 0), timeout=60, what="the allowed prober in"
    )
    start = int(time.time()) + 1
    support.wait_until(
        lambda: len(_lines(kube, ns, "denied", start)) >= 3,
        timeout=60,
        what="probes before the restart",
    )

    (old,) = [p["metadata"]["name"] for p in support.agent_pods(kube)]
    kube.run("-n", support.PODSEG_NS, "rollout", "restart", "daemonset/podseg-agent")
    kube.run(
        "-n", support.PODSEG_NS, "rollout", "status", "daemonset/podseg-agent", "--timeout=180s"
    )
    names = [p["metadata"]["name"] for p in support.agent_pods(kube)]
    assert old not in names, "a new agent pod runs"
    done = int(time.time()) + 1
    support.wait_until(
        lambda: (
            len(_lines(kube, ns, "allowed", done)) >= 5
            and len(_lines(kube, ns, "denied", done)) >= 5
        ),
        timeout=60,
        what="probes after the restart",
    )

    allowed, denied = _lines(kube, ns, "allowed", start), _lines(kube, ns, "denied", start)
    assert "OPEN" not in denied, (
        f"the denied pair connected ({denied.count('OPEN')} of {len(denied)})"
    )
    assert "CLOSED" not in allowed, (
        f"the allowed pair was cut ({allowed.count('CLOSED')} of {len(allowed)})"
    )
    assert len(allowed) >= 10 and len(denied) >= 10
    log = kube.logs(support.PODSEG_NS, "daemonset/podseg-agent")
    assert support.rbac_denials(log) == []
