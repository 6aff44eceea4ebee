"""The whole containment chain, live: a Falco (falcosidekick) webhook POST to a running
`podseg responder` -> quarantine label through the API emulator -> the agent -> the pod's
kernel rules and conntrack table. The time from the POST to isolation is printed."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import probe
from tests.support import responder as harness

ECHO = 7000
NAMESPACE, POD = "payments", "api-5b6c7d8f9-qr7tz"  # as named in the sample payload
KEY = f"{NAMESPACE}/{POD}"
BUDGET = 5.0
INTERVAL = 0.005  # one echo per 5 ms: the cut is known to within that


@pytest.fixture(scope="module")
def chain() -> Iterator[tuple[sandbox_cluster.SandboxCluster, harness.ResponderProcess]]:
    with sandbox_cluster.SandboxCluster(nodes=("node-1",)) as cluster:
        cluster.ensure_namespace(NAMESPACE, {"ns": NAMESPACE})
        cluster.add_pod(NAMESPACE, POD, {"app": "api"}, echo_ports=(ECHO,))
        cluster.add_pod(NAMESPACE, "client", {"app": "client"}, echo_ports=(ECHO,))
        cluster.start_agent("node-1")
        responder = harness.ResponderProcess(cluster.kubeconfig, cluster.workdir)
        try:
            yield cluster, responder
        finally:
            responder.stop()


def test_falco_finding_quarantines_the_pod_end_to_end(
    chain: tuple[sandbox_cluster.SandboxCluster, harness.ResponderProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster, responder = chain
    pods = cluster.pods
    victim, client = pods[KEY], pods[f"{NAMESPACE}/client"]
    assert probe.probe(client, victim.ipv4, 80, timeout=0.5) == probe.OK
    inbound = probe.HeldConnection(client, victim.ipv4, ECHO, interval=INTERVAL)
    outbound = probe.HeldConnection(victim, client.ipv4, ECHO, interval=INTERVAL)
    assert inbound.connected and outbound.connected

    posted = time.monotonic()
    status, body = responder.post("falco", harness.load("falcosidekick_reverse_shell"))
    answered = time.monotonic()
    assert status == 200 and body["outcome"] == "quarantined", body

    reports = [held.wait_broken(BUDGET) for held in (inbound, outbound)]
    for report in reports:
        assert report["broken"] == "timeout" and report["exchanges"] > 0, report
    cut_at = max(float(r["last_ok"]) for r in reports)
    assert cut_at - posted < BUDGET
    assert probe.probe(client, victim.ipv4, 80, timeout=0.3) == probe.TIMEOUT
    assert probe.probe(victim, client.ipv4, 80, timeout=0.3) == probe.TIMEOUT
    labels = cluster.core.read_namespaced_pod(POD, NAMESPACE).metadata.labels
    assert labels["podseg.io/quarantine"] == "true"
    # A repeated finding makes no second change.
    again, body = responder.post("falco", harness.load("falcosidekick_reverse_shell"))
    assert again == 200 and body["outcome"] == "unchanged"
    with capsys.disabled():
        last = 1000 * (cut_at - posted)
        print(
            f"\nresponder chain: POST answered in {1000 * (answered - posted):.1f} ms; "
            f"both held connections cut between {last:.1f} and {last + 1000 * INTERVAL:.1f} ms "
            "after the POST (last echo answered, next one lost)"
        )
