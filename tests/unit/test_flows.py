"""Pure parts of drop capture: NFLOG parsing, flow aggregation and folding, deny rules per
mode, the prefix/counter naming contract, workloads from ownerReferences, the mode label."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from agent import model
from agent.calc import compile as calc_compile
from agent.calc import mode as calc_mode
from agent.calc import ruleset
from agent.dataplane import netlink
from agent.dataplane.nft import render as render_nft
from agent.flows import aggregate, nflog
from agent.k8s import convert

PREFIX = "podseg ingress policy enforce"


def _attr(kind: int, data: bytes) -> bytes:
    pad = (4 - len(data) % 4) % 4
    return struct.pack("=HH", 4 + len(data), kind) + data + b"\0" * pad


def _message(payload: bytes, prefix: str = PREFIX, family: int = 2) -> bytes:
    body = struct.pack("!BBH", family, 0, render_nft.NFLOG_GROUP)
    body += _attr(1, struct.pack("!HBB", 0x0800, 1, 0))  # NFULA_PACKET_HDR
    body += _attr(nflog.NFULA_PREFIX, prefix.encode() + b"\0")
    body += _attr(nflog.NFULA_PAYLOAD, payload)
    header = struct.pack("=IHHII", 16 + len(body), (4 << 8) | 0, 0, 0, 0)
    return header + body


def _ipv4(src: str, dst: str, proto: int, sport: int, dport: int) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        40,
        1,
        0,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return header + struct.pack("!HH", sport, dport) + b"\0" * 16


def _ipv6(src: str, dst: str, sport: int, dport: int, hop_by_hop: bool = False) -> bytes:
    first = 0 if hop_by_hop else 17
    header = struct.pack("!IHBB", 6 << 28, 16, first, 64)
    header += ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
    ext = bytes([17, 0]) + b"\0" * 6 if hop_by_hop else b""
    return header + ext + struct.pack("!HHHH", sport, dport, 8, 0)


def test_parse_ipv4_tcp_and_ipv6_udp_with_an_extension_header() -> None:
    buf = _message(_ipv4("198.18.1.2", "198.18.1.3", 6, 40000, 80))
    buf += _message(_ipv6("fd00:198:18::2", "fd00:198:18::3", 5353, 81, True), family=10)
    buf += struct.pack("=IHHII", 16, netlink.NLMSG_DONE, 0, 0, 0)
    packets, stats = nflog.parse(buf)
    assert packets == [
        nflog.Packet(PREFIX, "198.18.1.2", "198.18.1.3", 6, 40000, 80),
        nflog.Packet(PREFIX, "fd00:198:18::2", "fd00:198:18::3", 17, 5353, 81),
    ]
    assert (stats.ok, stats.truncated, stats.unparseable, stats.other) == (2, 0, 0, 1)


def test_truncated_and_garbage_messages_are_counted_never_raised() -> None:
    good = _message(_ipv4("198.18.1.2", "198.18.1.3", 17, 1, 2))
    cut = good[: len(good) - 30]
    packets, stats = nflog.parse(cut)
    assert packets == [] and stats.truncated == 1
    short_payload = _message(_ipv4("198.18.1.2", "198.18.1.3", 6, 1, 2)[:22])
    assert nflog.parse(short_payload)[1].truncated == 1
    not_ip = _message(b"\x10" + b"\0" * 40)
    assert nflog.parse(not_ip)[1].unparseable == 1
    assert nflog.parse(b"\x01\x02\x03")[1].truncated == 1
    bogus_len = struct.pack("=IHHII", 4, 0x400, 0, 0, 0)
    assert nflog.parse(bogus_len)[1].unparseable == 1
    for n in range(len(good)):  # every prefix of a valid message: no exception
        nflog.parse(good[:n])


def test_bind_request_and_ack_error() -> None:
    request = nflog.bind_message(7, seq=3)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", request)
    assert length == len(request) and kind == (4 << 8) | 1 and seq == 3
    assert flags == netlink.NLM_F_REQUEST | netlink.NLM_F_ACK
    assert struct.unpack_from("!BBH", request, 16) == (0, 0, 7)
    ack = struct.pack("=IHHII", 36, netlink.NLMSG_ERROR, 0, 3, 0) + struct.pack("=i", -16)
    assert nflog.ack_error(ack + b"\0" * 16) == 16  # EBUSY
    assert nflog.ack_error(b"") is None


def test_aggregation_keys_on_flow_and_folds_unknown_addresses() -> None:
    agg = aggregate.Aggregator(max_flows=2)
    pods = {"198.18.1.2", "198.18.1.3"}.__contains__
    for sport in range(10):  # a storm of attempts from one peer to one port: one flow
        p = nflog.Packet(PREFIX, "198.18.1.2", "198.18.1.3", 6, 40000 + sport, 80)
        assert agg.add("x/b", p, float(sport), pods)
    for last in (5, 6):  # two external hosts of one /24: one folded flow
        p = nflog.Packet(PREFIX, f"203.0.113.{last}", "198.18.1.3", 6, 1, 80)
        agg.add("x/b", p, 1.0, pods)
    p = nflog.Packet(PREFIX, "198.18.1.2", "198.18.1.3", 6, 1, 443)
    agg.add("x/b", p, 1.0, pods)  # a third flow: over the cap, counted
    assert not agg.add("x/b", nflog.Packet("other", "1.1.1.1", "2.2.2.2", 6, 1, 2), 1.0, pods)
    flows = dict(agg.flush())
    assert agg.overflow == 1 and agg.foreign == 1 and agg.flush() == []
    pod_flow = aggregate.FlowKey(
        "x/b", "ingress", "policy", "enforce", "198.18.1.2", "198.18.1.3", 6, 80
    )
    assert flows[pod_flow].packets == 10 and flows[pod_flow].first == 0.0
    assert flows[pod_flow].last == 9.0
    assert any(k.src == "203.0.113.0/24" and v.packets == 2 for k, v in flows.items())
    assert aggregate.fold("2001:db8:1:2:3::9", pods) == "2001:db8:1:2::/64"


def test_deny_rules_log_count_and_drop_per_mode() -> None:
    ingress, egress = ruleset.Direction.INGRESS, ruleset.Direction.EGRESS
    vis = ruleset.PolicyMode.VISIBILITY
    rules = render_nft.deny_rules(ingress, "policy", ["eth0"])
    assert rules[0].startswith(f"limit rate {render_nft.LOG_RATE} log prefix")
    assert f"group {render_nft.NFLOG_GROUP}" in rules[0] and "queue-threshold" in rules[0]
    assert rules[1] == 'counter name "deny.ingress.policy.enforce" drop'
    egress_rules = render_nft.deny_rules(egress, "quarantine", ["eth0"])
    assert '"podseg egress quarantine enforce"' in egress_rules[0]
    assert "meta mark set" in egress_rules[2] and egress_rules[2].endswith("accept")
    for direction in (ingress, egress):
        visible = render_nft.deny_rules(direction, "policy", ["eth0"], mode=vis)
        assert visible[-1] == f'counter name "deny.{direction.value}.policy.visibility" accept'
        assert not any("drop" in r or "mark" in r for r in visible)
    rs = ruleset.PodRuleset("x", "b", ingress=ruleset.DirectionRuleset(isolated=True), mode=vis)
    script = render_nft.render(rs, ["eth0"]).script
    assert "counter deny.ingress.policy.visibility {" in script
    enforce = render_nft.render(dataclasses_replace(rs, ruleset.PolicyMode.ENFORCE), ["eth0"])
    assert enforce.fingerprint != render_nft.render(rs, ["eth0"]).fingerprint


def dataclasses_replace(rs: ruleset.PodRuleset, mode: ruleset.PolicyMode) -> ruleset.PodRuleset:
    import dataclasses

    return dataclasses.replace(rs, mode=mode)


def test_prefix_and_counter_names_round_trip() -> None:
    d, m = ruleset.Direction.EGRESS, ruleset.PolicyMode.VISIBILITY
    for reason in ("policy", "quarantine", "node-guard"):
        assert render_nft.parse_log_prefix(render_nft.log_prefix(d, reason, m)) == (
            "egress",
            reason,
            "visibility",
        )
        assert render_nft.parse_counter_name(render_nft.counter_name(d, reason, m)) == (
            "egress",
            reason,
            "visibility",
        )
    assert render_nft.parse_log_prefix("kernel: something") is None
    assert render_nft.parse_counter_name("mine") is None


def _pod(owners: object, labels: dict[str, str] | None = None) -> model.Pod:
    return convert.pod(
        {
            "metadata": {
                "namespace": "x",
                "name": "web-7d9f8c6b5-abcde",
                "labels": labels or {},
                "ownerReferences": owners,
            }
        }
    )


@pytest.mark.parametrize(
    ("owners", "labels", "workload"),
    [
        (
            [{"kind": "ReplicaSet", "name": "web-7d9f8c6b5", "controller": True}],
            {"pod-template-hash": "7d9f8c6b5"},
            "web",
        ),
        (
            [{"kind": "ReplicaSet", "name": "standalone-rs", "controller": True}],
            {},
            "standalone-rs",
        ),
        ([{"kind": "StatefulSet", "name": "db", "controller": True}], {}, "db"),
        ([{"kind": "DaemonSet", "name": "agent", "controller": True}], {}, "agent"),
        ([{"kind": "Job", "name": "backup-28934", "controller": True}], {}, "backup-28934"),
        (
            [{"kind": "ConfigMap", "name": "cm"}, {"kind": "Job", "name": "j", "controller": True}],
            {},
            "j",
        ),
        (None, {}, ""),  # a bare pod: never its own name
        ("garbage", {}, ""),
        ([{"kind": "ReplicaSet"}], {}, ""),
    ],
)
def test_workload_from_owner_references(
    owners: object, labels: dict[str, str], workload: str
) -> None:
    assert _pod(owners, labels).workload == workload


def test_mode_label_pod_tightens_only_and_unknown_values_enforce() -> None:
    vis, enf = ruleset.PolicyMode.VISIBILITY, ruleset.PolicyMode.ENFORCE
    namespaces = {"x": model.Namespace("x", {calc_mode.LABEL: "visibility"})}
    pod = model.Pod("x", "a")
    assert calc_mode.resolve(pod, namespaces) == calc_mode.Resolution(vis)
    pinned = model.Pod("x", "a", labels={calc_mode.LABEL: "enforce"})
    assert calc_mode.resolve(pinned, namespaces) == calc_mode.Resolution(enf)
    assert calc_mode.resolve(pod, {}) == calc_mode.Resolution(enf)
    typo = model.Pod("x", "a", labels={calc_mode.LABEL: "visiblity"})
    assert calc_mode.resolve(typo, namespaces) == calc_mode.Resolution(enf, "visiblity")
    # A pod cannot opt itself out of an enforcing namespace, unless the operator allows it.
    loose = model.Pod("y", "a", labels={calc_mode.LABEL: "visibility"})
    enforcing = {"y": model.Namespace("y", {calc_mode.LABEL: "enforce"})}
    for spaces in (enforcing, {}):
        assert calc_mode.resolve(loose, spaces) == calc_mode.Resolution(enf, refused="visibility")
        assert calc_mode.resolve(loose, spaces, pod_may_loosen=True).mode is vis
    compiled = calc_compile.compile_pod(pod, [], namespaces, [pod])
    assert compiled.mode is vis


@pytest.mark.parametrize(
    "prefix",
    [
        "podseg ingress policy enforce-x",
        "podseg sideways policy enforce",
        "podseg egress because-i-said-so enforce",
        "podseg egress policy enforce extra",
        "other ingress policy enforce",
    ],
)
def test_a_prefix_outside_podsegs_vocabulary_never_becomes_a_label(prefix: str) -> None:
    assert render_nft.parse_log_prefix(prefix) is None
    assert render_nft.parse_counter_name(prefix.replace(" ", ".").replace("podseg", "deny")) is None
    agg = aggregate.Aggregator()
    packet = nflog.Packet(prefix, "198.18.0.1", "198.18.0.2", 6, 1000, 80)
    assert not agg.add("x/a", packet, 0.0, lambda ip: False)
    assert agg.foreign == 1 and not agg.flows


def test_podsegs_own_prefixes_and_counters_parse() -> None:
    for direction in ruleset.Direction:
        for reason in render_nft.DROP_REASONS:
            for mode in ruleset.PolicyMode:
                prefix = render_nft.log_prefix(direction, reason, mode)
                assert render_nft.parse_log_prefix(prefix) == (direction.value, reason, mode.value)
                name = render_nft.counter_name(direction, reason, mode)
                assert render_nft.parse_counter_name(name) == (direction.value, reason, mode.value)
