"""Samples to workload edges: workloads named like the metrics' `workload` (a bare pod by its
own name), external addresses folded, each connection counted once across both ends."""

from __future__ import annotations

from agent import model
from agent.flows import edges, nflog

WEB = model.Pod("shop", "web-7d9c-x1", ips=("198.18.1.1",), workload="web")
WEB2 = model.Pod("shop", "web-7d9c-x2", ips=("198.18.1.2",), workload="web")
DB = model.Pod("shop", "db-0", ips=("198.18.2.1", "fd00:198:18::21"), workload="db")
BARE = model.Pod("tools", "debug", ips=("198.18.3.1",))
PODS = {ip: pod for pod in (WEB, WEB2, DB, BARE) for ip in pod.ips}


def sample(
    prefix: str, src: str, dst: str, port: int | None = 5432, proto: int = 6
) -> nflog.Packet:
    return nflog.Packet(prefix, src, dst, proto, 40000 if port else None, port)


def key(
    src: tuple[str, str, str],
    dst: tuple[str, str, str],
    port: int,
    verdict: str,
    protocol: str = "TCP",
) -> edges.EdgeKey:
    return edges.EdgeKey(*src, *dst, protocol, port, verdict)


def test_an_allowed_connection_between_pods_counts_once_at_the_destination() -> None:
    ingress = sample("podseg accept ingress", WEB.ips[0], DB.ips[0])
    egress = sample("podseg accept egress", WEB.ips[0], DB.ips[0])
    assert edges.classify(ingress, PODS) == key(
        ("shop", "web", ""), ("shop", "db", ""), 5432, "allowed"
    )
    assert edges.classify(egress, PODS) is None  # the destination's ingress counts it
    # ... unless the destination's ingress samples nothing (not isolated): then egress counts
    assert edges.classify(egress, PODS, lambda pod: False) == edges.classify(ingress, PODS)


def test_egress_to_an_external_address_is_folded_and_counted() -> None:
    out = edges.classify(sample("podseg accept egress", DB.ips[1], "2001:db8:5:6::9", 443), PODS)
    assert out == key(("shop", "db", ""), ("", "", "2001:db8:5:6::/64"), 443, "allowed")
    inbound = edges.classify(sample("podseg accept ingress", "203.0.113.7", BARE.ips[0], 22), PODS)
    assert inbound == key(("", "", "203.0.113.0/24"), ("tools", "debug", ""), 22, "allowed")


def test_drops_keep_their_verdict_and_portless_protocols_store_no_port() -> None:
    dropped = sample("podseg ingress policy enforce", BARE.ips[0], DB.ips[0])
    would = sample("podseg egress policy visibility", WEB.ips[0], DB.ips[0], None, 1)
    assert edges.classify(dropped, PODS) == key(
        ("tools", "debug", ""), ("shop", "db", ""), 5432, "dropped"
    )
    assert edges.classify(would, PODS) == key(
        ("shop", "web", ""), ("shop", "db", ""), edges.NO_PORT, "would-drop", "ICMP"
    )
    assert edges.classify(sample("not ours", WEB.ips[0], DB.ips[0]), PODS) is None
    assert edges.classify(sample("podseg accept sideways", WEB.ips[0], DB.ips[0]), PODS) is None


def test_pods_of_one_workload_share_an_edge_within_a_window() -> None:
    window = edges.Edges(max_edges=2)
    for src, at in ((WEB, 1.0), (WEB2, 2.0), (WEB, 3.0)):
        found = edges.classify(sample("podseg accept ingress", src.ips[0], DB.ips[0]), PODS)
        assert found is not None
        window.add(found, at)
    other = edges.classify(sample("podseg accept ingress", BARE.ips[0], DB.ips[0]), PODS)
    third = edges.classify(sample("podseg accept ingress", BARE.ips[0], DB.ips[0], 1), PODS)
    assert other is not None and third is not None
    window.add(other, 4.0)
    window.add(third, 5.0)  # over the cap: counted, not kept
    flushed = dict(window.flush())
    assert window.overflow == 1 and window.flush() == []
    web_db = key(("shop", "web", ""), ("shop", "db", ""), 5432, "allowed")
    assert (flushed[web_db].count, flushed[web_db].first, flushed[web_db].last) == (3, 1.0, 3.0)
    assert len(flushed) == 2
