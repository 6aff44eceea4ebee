"""Containment that depends on the pod's own namespace: anti-spoofing (its addresses, governed
by a namespace label only), what the scan saw there (`containment.link`: link-local addresses,
gateways, on-link routes), the node guard's reach (metadata, gateways, extra addresses), and
the lockdown of a contested namespace."""

from __future__ import annotations

import dataclasses

import pytest

from agent import config, model
from agent.calc import containment, intervals, ruleset
from agent.calc import desired as calc_desired
from agent.dataplane import netns
from agent.sync import placement

A = intervals.address_range
C = intervals.cidr_range
NODES = [model.Node("n1", ("198.18.0.1",))]
PORTS = containment.parse_ports("tcp:22")
ROUTES = [
    ("0.0.0.0/0", "198.18.0.1", "eth0"),
    ("198.18.0.1/32", None, "eth0"),
    ("::/0", "fe80::1", "eth0"),
    ("fd00:198:18:1::/64", None, "eth0"),
    ("fe80::/64", None, "eth0"),
    ("198.19.0.0/16", "198.18.0.254", "eth0"),
    ("not a route", None, "eth0"),
    ("::/0", None, "eth0"),  # a default route without next hop: no neighbour
]


def pod(labels: dict[str, str] | None = None) -> model.Pod:
    return model.Pod("ns", "p", labels=labels or {}, ips=("198.18.1.5", "fd00:198:18:1::5"))


def test_link_reads_gateways_scoped_gateways_and_on_link_routes() -> None:
    link = containment.link(["fe80::1:5", "bogus"], ROUTES)
    assert link.link_local == (A("fe80::1:5"),)
    assert link.gateways == (A("198.18.0.1"), A("198.18.0.254"))
    assert link.scoped_gateways == (("eth0", A("fe80::1")),)
    assert link.onlink == intervals.merge_addrs(
        [A("198.18.0.1"), C("fd00:198:18:1::/64"), C("fe80::/64")]
    )


def test_anti_spoofing_is_on_for_every_pod_and_only_a_namespace_label_lifts_it() -> None:
    link = containment.link(["fe80::1:5"], ROUTES)
    spoof = containment.anti_spoof(pod(), None, link)
    assert spoof == ruleset.AntiSpoof(
        own=(A("198.18.1.5"), A("fd00:198:18:1::5")), link_local=(A("fe80::1:5"),)
    )
    # The pod cannot opt out; its namespace (an admin's) can.
    own_label = pod({containment.ANTI_SPOOF_LABEL: "off"})
    assert containment.anti_spoof(own_label, model.Namespace("ns"), link) == spoof
    off = model.Namespace("ns", {containment.ANTI_SPOOF_LABEL: "off"})
    assert containment.anti_spoof(pod(), off, link) is None
    on = model.Namespace("ns", {containment.ANTI_SPOOF_LABEL: "on"})
    assert containment.anti_spoof(pod(), on, link) is not None
    contained = containment.contain(ruleset.PodRuleset("ns", "p"), pod(), None, NODES, None)
    assert contained.ruleset.anti_spoof is not None  # with the node guard off too


def test_node_guard_covers_metadata_gateways_scoped_gateways_and_extra_addresses() -> None:
    link = containment.link([], ROUTES)
    extra = containment.parse_addresses("198.19.254.1, fd00:198:18:fe::/64")
    guard = containment.node_guard(None, NODES, PORTS, link=link, extra=extra)
    assert guard is not None
    assert guard.node_addrs == intervals.merge_addrs(
        [A("198.18.0.1"), A("198.18.0.254"), A("198.19.254.1"), C("fd00:198:18:fe::/64")]
    )
    assert guard.scoped == (("eth0", A("fe80::1")),)
    for address in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"):
        assert A(address) in guard.blocked
    exempt = model.Namespace("ns", {containment.NODE_GUARD_LABEL: "off"})
    assert containment.node_guard(exempt, NODES, PORTS, link=link, extra=extra) is None


def test_parse_addresses_refuses_garbage_and_default_routes() -> None:
    assert containment.parse_addresses("") == ()
    assert containment.parse_addresses("198.18.9.1,198.18.9.1/32") == (A("198.18.9.1"),)
    for bad in ("198.18.9", "0.0.0.0/0", "::/0", "host"):
        with pytest.raises(ValueError):
            containment.parse_addresses(bad)


def test_extra_addresses_flag_reaches_the_settings() -> None:
    settings = config.parse(
        ["--node-name", "n1", "--node-guard-extra-addresses", "198.19.254.1,fd00::9"], {}
    )
    assert settings.node_guard_extra_addresses == (A("198.19.254.1"), A("fd00::9"))
    from_env = config.parse(
        ["--node-name", "n1"], {"PODSEG_NODE_GUARD_EXTRA_ADDRESSES": "198.19.254.2"}
    )
    assert from_env.node_guard_extra_addresses == (A("198.19.254.2"),)
    assert config.parse(["--node-name", "n1"], {}).node_guard_extra_addresses == ()


def test_desired_takes_the_link_and_a_lockdown_adds_a_closed_quarantine() -> None:
    cluster = calc_desired.Cluster.of(
        pods=[pod()],
        namespaces={"ns": model.Namespace("ns")},
        nodes=NODES,
        guard_ports=PORTS,
    )
    link = containment.link(["fe80::1:5"], ROUTES)
    rs = calc_desired.desired(pod(), cluster, link).ruleset
    assert rs.link == link and rs.quarantine is None
    assert rs.node_guard is not None and A("198.18.0.254") in rs.node_guard.node_addrs
    assert rs.anti_spoof is not None and rs.anti_spoof.link_local == (A("fe80::1:5"),)
    locked = calc_desired.desired(pod(), cluster, link, lockdown=True).ruleset
    assert locked.quarantine == ruleset.Quarantine(allow_from=())
    assert locked == containment.lockdown(rs)
    # Without what the scan saw, the pod's own addresses are still its only sources.
    bare = calc_desired.desired(pod(), cluster).ruleset
    assert bare.link == ruleset.Link() and bare.anti_spoof is not None


def test_a_namespace_link_is_read_once_per_scan_result() -> None:
    """Every plan of a pod asks for its namespace's link: the same scan result gives the very
    same Link, and changed routes a new one, as `containment.link` reads them."""
    routes = tuple(netns.Route(d, g, i) for d, g, i in ROUTES)
    target = netns.Target("/run/netns/psg-a", 7, ("eth0",), ("fe80::1:5",), routes)
    link = placement.link_of(target)
    assert link == containment.link(["fe80::1:5"], ROUTES)
    again = netns.Target(
        "/run/netns/psg-a",
        7,
        ("eth0",),
        ("fe80::1:5",),
        tuple(netns.Route(d, g, i) for d, g, i in ROUTES),
    )
    assert placement.link_of(again) is link
    fewer = dataclasses.replace(target, routes=routes[1:])
    assert placement.link_of(fewer) == containment.link(["fe80::1:5"], ROUTES[1:]) != link
