"""Quarantine, node guard and strict mode in the pure core: parsing, rulesets, rendering, and
the verdicts strict mode cuts connections by."""

from __future__ import annotations

import re
import struct

import pytest

from agent import config, model
from agent.calc import containment, intervals, ruleset, verdict
from agent.dataplane import conntrack, netlink, protocol
from agent.dataplane.nft import render as render_nft
from agent.k8s import convert

EGRESS = ruleset.Direction.EGRESS
INGRESS = ruleset.Direction.INGRESS
NODES = [model.Node("n1", ("198.18.0.1", "fd00:198:18:1::1")), model.Node("n2", ("198.18.128.1",))]
PORTS = containment.parse_ports(containment.DEFAULT_NODE_GUARD_PORTS)
TCP, UDP = 6, 17


def pod(
    labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None
) -> model.Pod:
    return model.Pod(
        "ns", "p", labels=labels or {}, annotations=annotations or {}, ips=("198.18.1.5",)
    )


def contained(
    p: model.Pod, rs: ruleset.PodRuleset | None = None, **kw: object
) -> containment.Contained:
    base = rs or ruleset.PodRuleset("ns", "p")
    ns = kw.get("namespace")
    return containment.contain(base, p, ns, NODES, PORTS)  # type: ignore[arg-type]


# -- parsing --------------------------------------------------------------------------------
def test_parse_ports_canonical_and_errors() -> None:
    got = containment.parse_ports("udp:53, tcp:22,tcp:20-23 ,tcp:10250")
    assert got == (
        ruleset.ProtoPorts(TCP, ruleset.PortRange(20, 23)),
        ruleset.ProtoPorts(TCP, ruleset.PortRange(10250, 10250)),
        ruleset.ProtoPorts(UDP, ruleset.PortRange(53, 53)),
    )
    for bad in ("tcp", "icmp:1", "tcp:0", "tcp:5-1", "tcp:x", "tcp:70000"):
        with pytest.raises(ValueError):
            containment.parse_ports(bad)
    assert containment.parse_ports("") == ()


def test_default_ports_cover_ssh_smb_etcd_rdp_kubelet_and_nodeports() -> None:
    def guarded(proto: int, port: int) -> bool:
        return any(p.protocol == proto and p.ports.first <= port <= p.ports.last for p in PORTS)

    for port in (22, 139, 445, 2379, 2380, 3389, 10250, 10255, 30000, 31000, 32767):
        assert guarded(TCP, port), port
    assert guarded(UDP, 30080) and not guarded(TCP, 80) and not guarded(TCP, 8080)


def test_config_flags_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.parse(["--node-name", "n"]).node_guard_ports == PORTS
    assert config.parse(["--node-name", "n"]).strict
    assert config.parse(["--node-name", "n", "--no-node-guard"]).node_guard_ports is None
    assert not config.parse(["--node-name", "n", "--no-strict"]).strict
    monkeypatch.setenv("PODSEG_STRICT", "false")
    monkeypatch.setenv("PODSEG_NODE_GUARD_PORTS", "tcp:2222")
    settings = config.parse(["--node-name", "n"])
    assert not settings.strict
    assert settings.node_guard_ports == (ruleset.ProtoPorts(TCP, ruleset.PortRange(2222, 2222)),)
    with pytest.raises(config.ConfigError, match="--node-guard-ports"):
        config.parse(["--node-name", "n", "--node-guard-ports", "tcp:99999"])


def test_convert_keeps_string_annotations() -> None:
    p = convert.pod(
        {"metadata": {"name": "a", "namespace": "x", "annotations": {"k": "v", "n": 3}}}
    )
    assert dict(p.annotations) == {"k": "v"}
    assert dict(convert.pod({"metadata": {"name": "a", "annotations": "junk"}}).annotations) == {}


# -- quarantine ------------------------------------------------------------------------------
def test_quarantine_label_and_forensic_cidrs() -> None:
    assert contained(pod()).ruleset.quarantine is None
    assert contained(pod({containment.QUARANTINE_LABEL: "false"})).ruleset.quarantine is None
    q = contained(
        pod(
            {containment.QUARANTINE_LABEL: "True"},
            {containment.ALLOW_FROM_ANNOTATION: "10.1.0.0/16, 10.1.2.0/24,fd00::/64"},
        )
    )
    assert q.errors == ()
    assert q.ruleset.quarantine == ruleset.Quarantine(
        (intervals.cidr_range("10.1.0.0/16"), intervals.cidr_range("fd00::/64"))
    )


@pytest.mark.parametrize(
    "entry", ["0.0.0.0/0", "::/0", "10.0.0.0/8", "10.0.0.0/15", "fd00::/47", "0.0.0.0/1"]
)
def test_a_forensic_source_wider_than_the_maximum_is_refused(entry: str) -> None:
    q = contained(
        pod(
            {containment.QUARANTINE_LABEL: "true"},
            {containment.ALLOW_FROM_ANNOTATION: f"{entry},192.0.2.0/24"},
        )
    )
    assert q.ruleset.quarantine == ruleset.Quarantine((intervals.cidr_range("192.0.2.0/24"),))
    assert len(q.errors) == 1 and "wider than" in q.errors[0]


def test_the_widest_forensic_source_is_configurable_but_never_a_default_route() -> None:
    widened = containment.allow_from(
        {containment.ALLOW_FROM_ANNOTATION: "10.0.0.0/8,0.0.0.0/0,::/0"}, widest=(1, 1)
    )
    assert widened[0] == (intervals.cidr_range("10.0.0.0/8"),) and len(widened[1]) == 2
    assert containment.parse_widest("8,32") == (8, 32)
    with pytest.raises(ValueError):
        containment.parse_widest("0,48")


def test_bad_annotation_keeps_the_quarantine_and_says_why() -> None:
    q = contained(
        pod(
            {containment.QUARANTINE_LABEL: "true"},
            {containment.ALLOW_FROM_ANNOTATION: "nonsense,,10.0.0.1/33, 192.0.2.0/24"},
        )
    )
    assert q.ruleset.quarantine == ruleset.Quarantine((intervals.cidr_range("192.0.2.0/24"),))
    assert len(q.errors) == 2 and "nonsense" in q.errors[0] and "10.0.0.1/33" in q.errors[1]


def test_quarantine_render_runs_first_in_both_directions() -> None:
    rs = ruleset.PodRuleset(
        "ns",
        "p",
        ingress=ruleset.DirectionRuleset(isolated=True, any_port_peers=intervals.ALL_ADDRESSES),
        egress=ruleset.DirectionRuleset(isolated=True, any_port_peers=intervals.ALL_ADDRESSES),
    )
    q = contained(
        pod(
            {containment.QUARANTINE_LABEL: "true"},
            {containment.ALLOW_FROM_ANNOTATION: "192.0.2.0/24"},
        ),
        rs,
    )
    script = render_nft.render(q.ruleset, ["eth0"]).script
    input_rules = _chain(script, "input")
    output_rules = _chain(script, "output")
    assert input_rules[:2] == ['iif "lo" accept', "jump quarantine_ingress"]
    assert output_rules[:2] == ['oif "lo" accept', "jump quarantine_egress"]
    ingress = _chain(script, "quarantine_ingress")
    ingress_deny = render_nft.deny_rules(INGRESS, "quarantine", ["eth0"])
    assert ingress[0] == "ip saddr @quarantine_allow4 accept"
    assert ingress[-len(ingress_deny) :] == ingress_deny
    assert ingress[-1] == 'counter name "deny.ingress.quarantine.enforce" drop'
    egress = _chain(script, "quarantine_egress")
    egress_deny = render_nft.deny_rules(EGRESS, "quarantine", ["eth0"])
    assert egress[0] == "ct direction reply ip daddr @quarantine_allow4 accept"
    assert egress[-len(egress_deny) :] == egress_deny
    assert "table netdev podseg {" in script
    # Without a policy, quarantine alone still gets chains and the device hook.
    alone = render_nft.render(
        contained(pod({containment.QUARANTINE_LABEL: "true"})).ruleset, ["eth0"]
    )
    assert "jump quarantine_ingress" in alone.script and "table netdev podseg {" in alone.script
    assert (
        render_nft.render(rs, ["eth0"]).fingerprint
        != render_nft.render(q.ruleset, ["eth0"]).fingerprint
    )


# -- node guard ------------------------------------------------------------------------------
def test_node_guard_on_by_default_exempt_by_namespace_label() -> None:
    guard = contained(pod()).ruleset.node_guard
    assert guard is not None
    assert guard.node_addrs == containment.node_addresses(NODES)
    metadata = ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
    assert guard.blocked == intervals.merge_addrs(intervals.address_range(a) for a in metadata)
    exempt = model.Namespace("ns", {containment.NODE_GUARD_LABEL: "off"})
    assert contained(pod(), namespace=exempt).ruleset.node_guard is None
    other = model.Namespace("ns", {containment.NODE_GUARD_LABEL: "on"})
    assert contained(pod(), namespace=other).ruleset.node_guard is not None
    off = containment.contain(ruleset.PodRuleset("ns", "p"), pod(), None, NODES, None)
    assert off.ruleset.node_guard is None


def test_node_guard_render_sits_after_established_before_policy() -> None:
    rs = ruleset.PodRuleset("ns", "p", egress=ruleset.DirectionRuleset(isolated=True))
    script = render_nft.render(contained(pod(), rs).ruleset, ["eth0"]).script
    output = _chain(script, "output")
    assert output.index("jump node_guard") == 2 and output[1].startswith("ct state established")
    assert output.index("jump node_guard") < output.index("jump egress_policy")
    guard = _chain(script, "node_guard")
    assert guard == [
        "ip daddr @node_guard_blocked4 jump node_guard_deny",
        "ip6 daddr @node_guard_blocked6 jump node_guard_deny",
        "ip daddr @node_guard_nodes4 meta l4proto . th dport @node_guard_ports"
        " jump node_guard_deny",
        "ip6 daddr @node_guard_nodes6 meta l4proto . th dport @node_guard_ports"
        " jump node_guard_deny",
    ]
    assert _chain(script, "node_guard_deny") == render_nft.deny_rules(
        EGRESS, "node-guard", ["eth0"]
    )
    assert "tcp . 30000-32767" in script and "198.18.128.1" in script
    # A pod without policies still gets the guard and the device hook.
    plain = render_nft.render(contained(pod()).ruleset, ["eth0"]).script
    assert "jump node_guard" in plain and "table netdev podseg {" in plain
    assert "chain input" not in plain


def test_deny_rules_one_shape_per_direction() -> None:
    for reason in render_nft.DROP_REASONS:
        ingress = render_nft.deny_rules(INGRESS, reason, ["eth0"])
        assert ingress[0].startswith("limit rate ") and f"ingress {reason} enforce" in ingress[0]
        assert ingress[1] == f'counter name "deny.ingress.{reason}.enforce" drop'
        egress = render_nft.deny_rules(EGRESS, reason, ["eth0"])
        counter = f'counter name "deny.egress.{reason}.enforce"'
        assert egress[1] == f'oifname != {{ "eth0" }} {counter} drop'
        assert egress[2].startswith(f"{counter} meta mark set") and egress[2].endswith("accept")
        assert render_nft.deny_rules(EGRESS, reason, [])[-1] == f"{counter} drop"
    with pytest.raises(ValueError):
        render_nft.deny_rules(INGRESS, "whim", ["eth0"])


# -- verdicts (strict mode) ------------------------------------------------------------------
def _rs(**kw: object) -> ruleset.PodRuleset:
    return ruleset.PodRuleset("ns", "p", **kw)  # type: ignore[arg-type]


def test_allows_follows_policy_quarantine_and_guard() -> None:
    peer = ruleset.PeerPort(intervals.address_range("198.18.1.9"), TCP, ruleset.PortRange(80, 80))
    rs = _rs(ingress=ruleset.DirectionRuleset(isolated=True, port_peers=(peer,)))
    assert verdict.allows(rs, INGRESS, "198.18.1.9", TCP, 80)
    assert not verdict.allows(rs, INGRESS, "198.18.1.9", TCP, 81)
    assert not verdict.allows(rs, INGRESS, "198.18.1.9", 1, None)  # ICMP: no port
    assert verdict.allows(rs, EGRESS, "203.0.113.1", UDP, 53)  # egress not isolated
    guarded = contained(pod(), rs).ruleset
    assert not verdict.allows(guarded, EGRESS, "198.18.0.1", TCP, 10250)
    assert not verdict.allows(guarded, EGRESS, "169.254.169.254", TCP, 80)
    assert verdict.allows(guarded, EGRESS, "198.18.0.1", TCP, 8080)
    assert verdict.allows(guarded, INGRESS, "198.18.1.9", TCP, 80)  # the guard is egress only
    q = contained(
        pod(
            {containment.QUARANTINE_LABEL: "true"},
            {containment.ALLOW_FROM_ANNOTATION: "192.0.2.0/24"},
        ),
        _rs(),
    ).ruleset
    assert verdict.allows(q, INGRESS, "192.0.2.7", TCP, 22)
    assert not verdict.allows(q, EGRESS, "192.0.2.7", TCP, 22)  # the pod cannot call out
    assert not verdict.allows(q, INGRESS, "198.18.1.9", TCP, 80)


def test_illegal_picks_entries_by_direction() -> None:
    peer = ruleset.PeerPort(intervals.address_range("198.18.1.9"), TCP, ruleset.PortRange(80, 80))
    rs = _rs(
        ingress=ruleset.DirectionRuleset(isolated=True, port_peers=(peer,)),
        egress=ruleset.DirectionRuleset(
            isolated=True, any_port_peers=(intervals.address_range("198.18.1.9"),)
        ),
    )
    me = "198.18.1.5"

    def entry(src: str, dst: str, proto: int, sport: int, dport: int) -> protocol.ConntrackEntry:
        return protocol.ConntrackEntry(4, src, dst, proto, sport, dport, mark=0, key="")

    entries = [
        entry("198.18.1.9", me, TCP, 4000, 80),  # allowed in
        entry("198.18.1.8", me, TCP, 4000, 80),  # not
        entry(me, "198.18.1.9", UDP, 5000, 53),  # allowed out
        entry(me, "198.18.1.8", TCP, 5000, 80),  # not
        entry("127.0.0.1", "127.0.0.1", TCP, 1, 2),  # lo
    ]
    assert verdict.illegal(rs, [me], entries) == [entries[1], entries[3]]


def test_removes_allows_is_conservative_but_skips_pure_widening() -> None:
    a = intervals.address_range("198.18.1.9")
    narrow = _rs(ingress=ruleset.DirectionRuleset(isolated=True, any_port_peers=(a,)))
    wide = _rs(
        ingress=ruleset.DirectionRuleset(
            isolated=True, any_port_peers=(intervals.cidr_range("198.18.1.0/24"),)
        )
    )
    assert not verdict.removes_allows(narrow, wide)
    assert verdict.removes_allows(wide, narrow)
    assert verdict.removes_allows(_rs(), narrow)  # newly isolated
    assert not verdict.removes_allows(narrow, _rs())  # isolation lifted
    assert verdict.removes_allows(None, narrow)
    ported = ruleset.PeerPort(a, TCP, ruleset.PortRange(80, 81))
    with_ports = _rs(ingress=ruleset.DirectionRuleset(isolated=True, port_peers=(ported,)))
    assert not verdict.removes_allows(with_ports, narrow)  # any port covers it
    fewer = ruleset.PeerPort(a, TCP, ruleset.PortRange(80, 80))
    assert verdict.removes_allows(
        with_ports, _rs(ingress=ruleset.DirectionRuleset(isolated=True, port_peers=(fewer,)))
    )
    guarded = contained(pod(), narrow).ruleset
    assert verdict.removes_allows(narrow, guarded) and not verdict.removes_allows(guarded, guarded)
    fewer_nodes = containment.contain(narrow, pod(), None, NODES[:1], PORTS).ruleset
    assert not verdict.removes_allows(guarded, fewer_nodes)  # a node left: blocks less
    assert verdict.removes_allows(fewer_nodes, guarded)  # a node joined: blocks more
    one_port = containment.contain(narrow, pod(), None, NODES, PORTS[:1]).ruleset
    assert not verdict.removes_allows(guarded, one_port) and verdict.removes_allows(
        one_port, guarded
    )


# -- conntrack wire format -------------------------------------------------------------------
def test_conntrack_tuple_parsing() -> None:
    ip = netlink.nested(
        conntrack.CTA_TUPLE_IP,
        netlink.attr(conntrack.CTA_IP_V4_SRC, bytes([198, 18, 1, 5])),
        netlink.attr(conntrack.CTA_IP_V4_DST, bytes([198, 18, 1, 9])),
    )
    proto = netlink.nested(
        conntrack.CTA_TUPLE_PROTO,
        netlink.attr(conntrack.CTA_PROTO_NUM, bytes([6])),
        netlink.attr(conntrack.CTA_PROTO_SRC_PORT, struct.pack("!H", 40000)),
        netlink.attr(conntrack.CTA_PROTO_DST_PORT, struct.pack("!H", 80)),
    )
    assert conntrack.parse_tuple(ip + proto) == {
        "family": 4,
        "src": "198.18.1.5",
        "dst": "198.18.1.9",
        "proto": 6,
        "sport": 40000,
        "dport": 80,
    }


def _chain(script: str, name: str) -> list[str]:
    body = re.search(rf"  chain {name} {{\n(.*?)\n  }}\n", script, re.S)
    assert body is not None, name
    lines = [line.strip() for line in body.group(1).splitlines()]
    return [line for line in lines if not line.startswith("type ")]


def test_node_addresses_are_parsed_once_for_the_same_nodes_and_again_when_one_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every local pod's node guard holds every node's addresses: they are parsed once for
    the very same Node objects, and a changed Node (a new object) is read afresh."""
    parsed: list[str] = []
    real = intervals.address_range

    def counting(address: str) -> ruleset.AddrRange:
        parsed.append(address)
        return real(address)

    monkeypatch.setattr(intervals, "address_range", counting)
    nodes = [model.Node(f"n{n}", (f"198.18.{n}.1",)) for n in range(50)]
    first = containment.node_addresses(nodes)
    for _ in range(5):
        assert containment.node_addresses(iter(nodes)) is first
    assert len(parsed) == 50
    moved = [*nodes[:-1], model.Node("n49", ("198.19.0.1",))]
    assert containment.node_addresses(moved) == intervals.merge_addrs(
        [*first[:-1], real("198.19.0.1")]
    )
    assert len(parsed) == 100
