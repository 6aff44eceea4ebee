"""NFLOG parsing without a kernel: IPv4 and IPv6 packets (extension headers too) with their
prefix, truncated or garbage messages counted and never raised, the bind request and its ack."""

from __future__ import annotations

import ipaddress
import struct

from agent.dataplane import netlink
from agent.dataplane.nft import render as render_nft
from agent.flows import nflog

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


def _device_message(frame_type: int, l3: bytes) -> bytes:
    """A packet logged in a device egress hook (netdev family 5): the payload starts with the
    Ethernet header, which the kernel also hands over as NFULA_L2HDR."""
    ether = (
        bytes.fromhex("9e09c5f2c557")
        + bytes.fromhex("7e5b7fbadedd")
        + struct.pack("!H", frame_type)
    )
    body = struct.pack("!BBH", 5, 0, render_nft.NFLOG_GROUP)
    body += _attr(1, struct.pack("!HBB", frame_type, 0, 0))
    body += _attr(nflog.NFULA_PREFIX, b"podseg egress spoofed enforce\0")
    body += _attr(nflog.NFULA_L2HDR, ether)
    body += _attr(nflog.NFULA_PAYLOAD, ether + l3)
    header = struct.pack("=IHHII", 16 + len(body), (4 << 8) | 0, 0, 0, 0)
    return header + body


def test_a_packet_logged_at_the_device_skips_its_link_layer_header() -> None:
    packets, stats = nflog.parse(
        _device_message(0x0800, _ipv4("198.18.0.99", "198.18.0.20", 17, 4444, 9999))
    )
    assert stats.ok == 1
    assert packets == [
        nflog.Packet("podseg egress spoofed enforce", "198.18.0.99", "198.18.0.20", 17, 4444, 9999)
    ]


def test_a_forged_arp_frame_is_a_packet_from_its_sender_to_its_target() -> None:
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2)
    arp += bytes(6) + ipaddress.IPv4Address("198.18.0.1").packed
    arp += bytes(6) + ipaddress.IPv4Address("198.18.0.20").packed
    packets, stats = nflog.parse(_device_message(nflog.ETH_P_ARP, arp))
    assert stats.ok == 1
    (packet,) = packets
    assert (packet.src, packet.dst, packet.protocol) == ("198.18.0.1", "198.18.0.20", nflog.ARP)
    assert nflog.protocol_name(packet.protocol) == "arp" and nflog.protocol_name(17) == "udp"
    short, stats = nflog.parse(_device_message(nflog.ETH_P_ARP, arp[:20]))
    assert short == [] and stats.truncated == 1
    other, stats = nflog.parse(_device_message(nflog.ETH_P_ARP, b"\0\6" + arp[2:]))
    assert other == [] and stats.unparseable == 1


def test_stats_go_on_the_wire_as_counters_by_result() -> None:
    _packets, stats = nflog.parse(_message(_ipv4("198.18.1.2", "198.18.1.3", 6, 1, 2)) + b"\x01")
    assert stats.as_dict() == {"ok": 1, "truncated": 1, "unparseable": 0, "other": 0}
