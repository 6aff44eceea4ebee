"""Parse nfnetlink_log (NFLOG) netlink messages into the dropped packets they describe. Pure.

The deny rules (`render_nft.deny_rules`) log each denied packet, rate-limited in the kernel,
to an NFLOG group of the pod's own namespace; `agent.flows.reader` receives the raw netlink
datagrams there and hands them to `parse`. Anything odd (a message cut short, an attribute
running past its message, a payload that is not IPv4, IPv6 or ARP, a prefix that is not ours)
is counted under a `Stats` field and skipped; parsing never raises on kernel input. Packets
logged in a device egress hook (anti-spoofing) carry their link-layer header, which is skipped.
Also builds the two configuration requests the reader sends (bind a group, set the flush
timeout). The netlink framing is `agent.dataplane.netlink`'s; this module knows NFLOG's
messages and the IP headers inside them.

The helper process (the drop reader's) imports this module, so it stays light: no
`dataclasses` (it pulls in `inspect`, `ast`, ...) and no renderer (`protocol_name` looks the
renderer up when the agent calls it, and the group to bind comes from the agent,
`agent.helper`); about 4 MiB of that process (tests/unit/test_child_imports.py).
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

from agent.dataplane import netlink

NETLINK_NETFILTER = netlink.NETLINK_NETFILTER
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULA_PACKET_HDR = 1
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
NFULA_L2HDR = 21
NFULA_CFG_CMD = 1
NFULA_CFG_TIMEOUT = 4
NFULNL_CFG_CMD_BIND = 1
AF_INET, AF_INET6 = 2, 10

_PACKET = netlink.nfnl_type(NFNL_SUBSYS_ULOG, NFULNL_MSG_PACKET)
_PORT_PROTOCOLS = {6, 17, 132}  # TCP, UDP, SCTP: the first 4 bytes are source, dest port
ETH_P_ARP = 0x0806
# The `protocol` of a logged ARP frame (anti-spoofing drops them in the device egress hook):
# outside the IP protocol numbers (0-255), as ARP is no IP protocol.
ARP = 0x100
_IPV6_EXTENSIONS = {0, 43, 60}  # hop-by-hop, routing, destination options (44: fragment)


class Packet(NamedTuple):
    """One logged packet: the rule's prefix and the packet's addresses, protocol and ports."""

    prefix: str
    src: str
    dst: str
    protocol: int
    sport: int | None
    dport: int | None


class Stats:
    """What `parse` saw besides packets; each counter is exported per result."""

    __slots__ = ("ok", "other", "truncated", "unparseable")

    def __init__(self) -> None:
        self.ok = 0
        self.truncated = 0
        self.unparseable = 0
        self.other = 0  # acks, errors, done markers: not packets

    def as_dict(self) -> dict[str, int]:
        """The counters by result, as the reader sends them."""
        return {
            "ok": self.ok,
            "truncated": self.truncated,
            "unparseable": self.unparseable,
            "other": self.other,
        }


def config_message(group: int, attrs: bytes, seq: int, family: int = 0) -> bytes:
    """A NFULNL_MSG_CONFIG request (with ack) for `group` carrying `attrs`."""
    kind = netlink.nfnl_type(NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG)
    flags = netlink.NLM_F_REQUEST | netlink.NLM_F_ACK
    return netlink.message(kind, flags, seq, netlink.nfgen(family, group) + attrs)


def bind_message(group: int, seq: int) -> bytes:
    """Bind this socket to NFLOG `group` (fails with EBUSY when another socket holds it)."""
    return config_message(group, netlink.attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])), seq)


def timeout_message(group: int, hundredths: int, seq: int) -> bytes:
    """Flush a partly filled batch after `hundredths` of a second (the queue-threshold waits)."""
    timeout = netlink.attr(NFULA_CFG_TIMEOUT, struct.pack("!I", hundredths))
    return config_message(group, timeout, seq)


def ack_error(buf: bytes) -> int | None:
    """The errno of the first NLMSG_ERROR in `buf` (0 is a plain ack); None when there is none."""
    try:
        for header, body in netlink.messages(buf):
            if header.type == netlink.NLMSG_ERROR:
                return netlink.error_code(body)
    except netlink.MalformedError:
        pass
    return None


def parse(buf: bytes) -> tuple[list[Packet], Stats]:
    """Every packet in one received datagram (one message, or a batch of them)."""
    packets: list[Packet] = []
    stats = Stats()
    try:
        for header, body in netlink.messages(buf):
            if header.type != _PACKET:
                stats.other += 1
                continue
            packet, result = _packet(body)
            if packet is not None:
                packets.append(packet)
                stats.ok += 1
            elif result == "truncated":
                stats.truncated += 1
            else:
                stats.unparseable += 1
    except netlink.TruncatedError:
        stats.truncated += 1
    except netlink.MalformedError:
        stats.unparseable += 1
    return packets, stats


def _packet(body: bytes) -> tuple[Packet | None, str]:
    if len(body) < netlink.NFGENMSG.size:
        return None, "truncated"
    try:
        attrs = netlink.attrs(body, netlink.NFGENMSG.size)
    except netlink.MalformedError:  # an attribute cut short or shorter than its header
        return None, "truncated"
    prefix = attrs.get(NFULA_PREFIX, b"").split(b"\0", 1)[0].decode(errors="replace")
    payload = attrs.get(NFULA_PAYLOAD)
    if payload is None:
        return None, "unparseable"
    # A packet logged in a device hook (netdev family) starts with its link-layer header,
    # which the kernel also hands over on its own: skip it.
    l2 = attrs.get(NFULA_L2HDR)
    if l2 and payload.startswith(l2):
        payload = payload[len(l2) :]
    header = attrs.get(NFULA_PACKET_HDR, b"")
    if len(header) >= 2 and struct.unpack_from("!H", header)[0] == ETH_P_ARP:
        return _arp(prefix, payload)
    return _l3(prefix, payload)


def protocol_name(number: int) -> str:
    """The name of a logged packet's protocol: `tcp`, `udp`, `sctp`, `arp`, or the number."""
    # Called in the agent, which has the renderer loaded; imported here so the reader never is.
    from agent.dataplane.nft import render as render_nft

    return "arp" if number == ARP else render_nft.format_protocol(number)


def _arp(prefix: str, p: bytes) -> tuple[Packet | None, str]:
    """An IPv4-over-Ethernet ARP frame as a packet from its sender to its target address."""
    if len(p) < 28:
        return None, "truncated"
    if p[0:6] != b"\x00\x01\x08\x00\x06\x04":  # Ethernet, IPv4, 6-byte MAC, 4-byte address
        return None, "unparseable"
    src = str(ipaddress.IPv4Address(p[14:18]))
    dst = str(ipaddress.IPv4Address(p[24:28]))
    return Packet(prefix, src, dst, ARP, None, None), "ok"


def _l3(prefix: str, p: bytes) -> tuple[Packet | None, str]:
    if not p:
        return None, "truncated"
    version = p[0] >> 4
    if version == 4:
        if len(p) < 20:
            return None, "truncated"
        ihl = (p[0] & 0x0F) * 4
        if ihl < 20:
            return None, "unparseable"
        protocol = p[9]
        src = str(ipaddress.IPv4Address(p[12:16]))
        dst = str(ipaddress.IPv4Address(p[16:20]))
        fragment_offset = struct.unpack_from("!H", p, 6)[0] & 0x1FFF
        l4 = ihl if fragment_offset == 0 else None
    elif version == 6:
        if len(p) < 40:
            return None, "truncated"
        protocol = p[6]
        src = str(ipaddress.IPv6Address(p[8:24]))
        dst = str(ipaddress.IPv6Address(p[24:40]))
        pos, l4 = 40, 40
        for _ in range(8):  # bounded walk over extension headers
            if protocol in _IPV6_EXTENSIONS and len(p) >= pos + 2:
                protocol, pos = p[pos], pos + (p[pos + 1] + 1) * 8
                l4 = pos
            elif protocol == 44 and len(p) >= pos + 8:
                first = struct.unpack_from("!H", p, pos + 2)[0] & 0xFFF8
                protocol, pos = p[pos], pos + 8
                l4 = pos if first == 0 else None
                break
            else:
                break
    else:
        return None, "unparseable"
    sport = dport = None
    if protocol in _PORT_PROTOCOLS and l4 is not None:
        if len(p) < l4 + 4:
            return None, "truncated"
        sport, dport = struct.unpack_from("!HH", p, l4)
    return Packet(prefix, src, dst, protocol, sport, dport), "ok"
