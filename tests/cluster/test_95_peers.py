"""A peer enforcer of the side-by-side race (`cluster.sh peer`, scripts/cluster/peer.sh) runs
inside the node's namespaces and leaves nothing there when stopped: kube-router's chains and
sets exist while it enforces a policy, and `peer stop` removes every one of them (checked by
`peer leftovers`, which the race relies on between enforcers).

Needs podseg uninstalled (file order: after test_90_uninstall) and the peers built
(bash scripts/cluster/build-peers.sh, about 5 minutes once); skips otherwise.
"""

from __future__ import annotations

import pathlib
import subprocess
from collections.abc import Callable

import pytest

from tests.cluster import support
from tests.cluster.support import OK, connect, expect

CLUSTER_SH = support.ROOT / "scripts" / "cluster.sh"


def peer(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", str(CLUSTER_SH), "peer", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert not check or done.returncode == 0, done.stdout + done.stderr
    return done


def test_kube_router_enforces_and_leaves_nothing_after_stop(
    kube: support.Kube, namespace: Callable[..., str]
) -> None:
    if not pathlib.Path(kube.config.kubectl).with_name("kube-router").is_file():
        pytest.skip("the peers are not built: bash scripts/cluster/build-peers.sh")
    agent = kube.run("-n", "podseg-system", "get", "daemonset", "podseg-agent", check=False)
    if agent.returncode == 0:
        pytest.skip("podseg is installed (the peers run only without it)")
    assert peer("leftovers", check=False).returncode == 0
    ns = namespace("peer")
    ips = support.run_pods(kube, ns, {"server": {"app": "server"}, "client": {"app": "client"}})
    peer("start", "kube-router")
    try:
        kube.apply(
            support.policy(
                "only-client",
                {
                    "podSelector": {"matchLabels": {"app": "server"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "nobody"}}}]}],
                },
            ),
            namespace=ns,
        )
        # kube-router rejects (REFUSED) where podseg drops: any verdict but OK is a denial
        support.wait_until(
            lambda: connect(kube, ns, "client", ips["server"], 80) != OK,
            timeout=60,
            what="kube-router denying client -> server",
        )
        left = peer("leftovers", check=False)
        assert left.returncode == 1 and "KUBE-ROUTER-FORWARD" in left.stdout, left.stdout
    finally:
        peer("stop")
    assert peer("leftovers", check=False).returncode == 0
    expect(kube, ns, "client", ips["server"], 80, allowed=True)
