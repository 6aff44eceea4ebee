"""Anti-spoofing, live: a pod with NET_RAW forging an allowed peer's source address does not
get past the victim's ingress policy; the peer itself does; the admin-governed namespace label
`podseg.io/anti-spoofing=off` (pods that route for others) lets the forgery through again.
Forged datagrams come from raw sockets (tests/support/rawpackets.py) inside the sandbox pods."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import probe
from tests.support import live, rawpackets
from tests.support.polling import wait_for

NS = "sp"
OFF = {"podseg.io/anti-spoofing": "off"}


class Env:
    def __init__(self, cluster: sandbox_cluster.SandboxCluster) -> None:
        self.cluster = cluster

    def ip(self, pod: str, family: int) -> str:
        found = self.cluster.pods[f"{NS}/{pod}"]
        return (found.ipv4 if family == 4 else found.ipv6) or ""

    def netns(self, pod: str) -> str:
        return self.cluster.pods[f"{NS}/{pod}"].netns

    def forged(self, family: int) -> list[str]:
        """Sources the victim received from one datagram the attacker sent with the friend's
        address as its source."""
        friend, victim = self.ip("friend", family), self.ip("victim", family)
        kind = "raw4" if family == 4 else "raw6"
        return rawpackets.received(
            self.netns("victim"),
            "0.0.0.0" if family == 4 else "::",
            self.netns("attacker"),
            [(kind, friend, victim)],
        )


@pytest.fixture(scope="module", params=live.BACKENDS)
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    """victim admits its friend only; attacker is not allowed in."""
    with sandbox_cluster.SandboxCluster(nodes=("node-1",)) as cluster:
        cluster.ensure_namespace(NS, {"ns": NS})
        for name in ("victim", "friend", "attacker"):
            cluster.add_pod(NS, name, {"pod": name})
        cluster.apply_policy(
            {
                "metadata": {"namespace": NS, "name": "victim-from-friend"},
                "spec": {
                    "podSelector": {"matchLabels": {"pod": "victim"}},
                    "policyTypes": ["Ingress"],
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "friend"}}}]}],
                },
            }
        )
        cluster.start_agent("node-1", live.backend_args(request))
        e = Env(cluster)
        victim = cluster.pods[f"{NS}/victim"]
        wait_for(
            lambda: (
                probe.probe(cluster.pods[f"{NS}/attacker"], victim.ipv4, 80, timeout=0.5)
                == probe.TIMEOUT
            ),
            what="victim isolated",
        )
        yield e


@pytest.mark.parametrize("family", [4, 6])
def test_a_forged_friends_address_does_not_get_past_the_policy(env: Env, family: int) -> None:
    friend, victim = env.ip("friend", family), env.ip("victim", family)
    kind = "raw4" if family == 4 else "raw6"
    listen = "0.0.0.0" if family == 4 else "::"
    # The friend itself gets in, with its own address:
    got = rawpackets.received(
        env.netns("victim"), listen, env.netns("friend"), [(kind, friend, victim)]
    )
    assert got == [friend]
    assert env.forged(family) == []


def test_the_namespace_label_lets_routing_pods_send_for_others(env: Env) -> None:
    friend = env.ip("friend", 4)
    env.cluster.label_namespace(NS, OFF)
    try:
        wait_for(lambda: env.forged(4) == [friend], timeout=10, what="forgery passes when exempt")
    finally:
        env.cluster.label_namespace(NS, {"podseg.io/anti-spoofing": None})
    wait_for(lambda: env.forged(4) == [], timeout=10, what="anti-spoofing back")
