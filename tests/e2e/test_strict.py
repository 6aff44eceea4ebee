"""Strict mode, live: removing the allow of an established connection kills it (its conntrack
entries are deleted in the affected pod namespaces); with `--no-strict` it lives on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import probe
from tests.support import live
from tests.support.polling import wait_for

ECHO = 7000
BUDGET = 5.0


def allow_ingress(cluster: sandbox_cluster.SandboxCluster, source: str) -> None:
    cluster.apply_policy(
        {
            "metadata": {"namespace": "s", "name": "server-ingress"},
            "spec": {
                "podSelector": {"matchLabels": {"pod": "server"}},
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"pod": source}}}],
                        "ports": [{"port": ECHO}, {"port": 80}],
                    }
                ],
            },
        }
    )


def allow_egress(cluster: sandbox_cluster.SandboxCluster, destination: str) -> None:
    cluster.apply_policy(
        {
            "metadata": {"namespace": "s", "name": "client-egress"},
            "spec": {
                "podSelector": {"matchLabels": {"pod": "client"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"podSelector": {"matchLabels": {"pod": destination}}}]}],
            },
        }
    )


BACKEND_ARGS: list[str] = []  # the running module cluster's `--backend` arguments


@pytest.fixture(scope="module", params=live.BACKENDS)
def cluster(request: pytest.FixtureRequest) -> Iterator[sandbox_cluster.SandboxCluster]:
    """The strict-mode cluster, once per dataplane backend."""
    with sandbox_cluster.SandboxCluster(nodes=("node-1",)) as c:
        c.ensure_namespace("s", {"ns": "s"})
        for name in ("server", "client", "other"):
            c.add_pod("s", name, {"pod": name}, echo_ports=(ECHO,))
        BACKEND_ARGS[:] = live.backend_args(request)
        c.start_agent("node-1", BACKEND_ARGS)
        yield c


@pytest.fixture
def clean(cluster: sandbox_cluster.SandboxCluster) -> Iterator[sandbox_cluster.SandboxCluster]:
    cluster.delete_all_policies()
    allow_ingress(cluster, "client")
    allow_egress(cluster, "server")
    pods = cluster.pods
    wait_for(
        lambda: (
            probe.probe(pods["s/other"], pods["s/server"].ipv4, 80, timeout=0.5) == probe.TIMEOUT
        ),
        what="policies in place",
    )
    yield cluster


def held(cluster: sandbox_cluster.SandboxCluster) -> probe.HeldConnection:
    pods = cluster.pods
    connection = probe.HeldConnection(pods["s/client"], pods["s/server"].ipv4, ECHO)
    assert connection.connected, connection.verdict
    return connection


def test_removed_ingress_allow_kills_the_established_connection(
    clean: sandbox_cluster.SandboxCluster,
) -> None:
    agent = clean.agents["node-1"]
    before = live.sample(agent, "podseg_connections_cut_total", reason="strict")
    connection = held(clean)
    allow_ingress(clean, "other")  # the server no longer admits the client
    report = connection.wait_broken(BUDGET)
    assert report["broken"] == "timeout" and report["exchanges"] > 0, report
    after = live.sample(agent, "podseg_connections_cut_total", reason="strict")
    assert (after or 0) > (before or 0)
    assert agent.events("connections_cut")


def test_removed_egress_allow_kills_the_established_connection(
    clean: sandbox_cluster.SandboxCluster,
) -> None:
    connection = held(clean)
    allow_egress(clean, "other")  # the client may no longer talk to the server
    report = connection.wait_broken(BUDGET)
    assert report["broken"] == "timeout" and report["exchanges"] > 0, report


def test_change_that_keeps_the_allow_keeps_the_connection(
    clean: sandbox_cluster.SandboxCluster,
) -> None:
    agent = clean.agents["node-1"]
    connection = held(clean)
    cuts = len(agent.events("connections_cut"))
    clean.apply_policy(  # widen: server or other
        {
            "metadata": {"namespace": "s", "name": "client-egress"},
            "spec": {
                "podSelector": {"matchLabels": {"pod": "client"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "podSelector": {
                                    "matchExpressions": [
                                        {
                                            "key": "pod",
                                            "operator": "In",
                                            "values": ["server", "other"],
                                        }
                                    ]
                                }
                            }
                        ]
                    }
                ],
            },
        }
    )
    pods = clean.pods
    wait_for(
        lambda: probe.probe(pods["s/client"], pods["s/other"].ipv4, 80, timeout=0.5) == probe.OK,
        what="widened",
    )
    allow_egress(clean, "server")  # narrow again: removes an allow, but not this connection's
    wait_for(
        lambda: len(agent.events("connections_cut")) > cuts, what="strict check after narrowing"
    )
    assert connection.alive(2.0)
    connection.release()


def test_without_strict_the_established_connection_lives_on(
    clean: sandbox_cluster.SandboxCluster,
) -> None:
    clean.agents.pop("node-1").stop()
    clean.start_agent("node-1", ["--no-strict", *BACKEND_ARGS])
    try:
        connection = held(clean)
        allow_ingress(clean, "other")
        pods = clean.pods
        wait_for(
            lambda: (
                probe.probe(pods["s/client"], pods["s/server"].ipv4, 80, timeout=0.5)
                == probe.TIMEOUT
            ),
            what="new connections denied",
        )
        assert connection.alive(2.0)  # the old one survives: the gap strict mode closes
        connection.release()
    finally:
        clean.agents.pop("node-1").stop()
        clean.start_agent("node-1", BACKEND_ARGS)
