"""List and delete conntrack entries of the current network namespace over raw ctnetlink.

Quarantine and strict mode must cut connections that the new ruleset no longer allows: with
`ct state established accept` in place, a connection whose conntrack entry survives would live
on. Deleting the entry makes its next packet meet the ruleset as a new flow. The worker calls
this after entering a pod's namespace (conntrack tables are per namespace).

Raw netlink (the codec of `agent.dataplane.netlink`) rather than pyroute2's `NFCTSocket` (whose
dump costs ~85 ms per call here, against well under a millisecond) or a `conntrack` process per
namespace. The entries' original tuples are returned as raw attribute bytes (hex), so a delete
sends back exactly the tuple the kernel reported (ICMP ids, zones and all) without re-encoding
it.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Iterator
from typing import Any

from agent.dataplane import netlink

NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2

CTA_TUPLE_ORIG = 1
CTA_MARK = 8
CTA_ID = 12
CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3

MAX_ENTRIES = 1_000_000  # a bound on one dump, far above any pod's table
_RECV_BYTES = 1 << 20


class ConntrackError(netlink.NetlinkError):
    """ctnetlink refused a request."""


def parse_tuple(raw: bytes) -> dict[str, Any]:
    """An original-direction tuple: src, dst, proto and (TCP/UDP/SCTP) ports."""
    parts = netlink.attrs(raw)
    ips = netlink.attrs(parts.get(CTA_TUPLE_IP, b""))
    proto = netlink.attrs(parts.get(CTA_TUPLE_PROTO, b""))
    if CTA_IP_V4_SRC in ips:
        src = str(ipaddress.IPv4Address(ips[CTA_IP_V4_SRC]))
        dst = str(ipaddress.IPv4Address(ips.get(CTA_IP_V4_DST, b"\0" * 4)))
        family = 4
    else:
        src = str(ipaddress.IPv6Address(ips.get(CTA_IP_V6_SRC, b"\0" * 16)))
        dst = str(ipaddress.IPv6Address(ips.get(CTA_IP_V6_DST, b"\0" * 16)))
        family = 6
    number = proto.get(CTA_PROTO_NUM, b"\0")[0]
    sport = proto.get(CTA_PROTO_SRC_PORT)
    dport = proto.get(CTA_PROTO_DST_PORT)
    return {
        "family": family,
        "src": src,
        "dst": dst,
        "proto": number,
        "sport": struct.unpack("!H", sport)[0] if sport and len(sport) == 2 else None,
        "dport": struct.unpack("!H", dport)[0] if dport and len(dport) == 2 else None,
    }


COUNT_SYSCTL = "/proc/sys/net/netfilter/nf_conntrack_count"


def tracked_here() -> int | None:
    """How many connections the current network namespace tracks (its own count, read from
    the sysctl of the namespace the process is in); None when conntrack is not loaded.

    Why: a dump walks the kernel's global conntrack hash, 12-40 ms on a busy node, even for a
    namespace that tracks nothing; this read costs microseconds and lets the caller skip it.
    """
    try:
        with open(COUNT_SYSCTL) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


class Conntrack:
    """A ctnetlink socket bound to the namespace the calling thread is in when it is made."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink.NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self.sock.settimeout(5.0)
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Conntrack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, msg: int, flags: int, family: int, payload: bytes = b"") -> int:
        self.seq += 1
        kind = netlink.nfnl_type(NFNL_SUBSYS_CTNETLINK, msg)
        self.sock.send(netlink.message(kind, flags, self.seq, netlink.nfgen(family) + payload))
        return self.seq

    def _messages(self, seq: int) -> Iterator[bytes]:
        """The payloads (after nfgenmsg) answering `seq`, until DONE or the ack."""
        for _header, body in netlink.responses(
            self.sock, seq, bufsize=_RECV_BYTES, error=ConntrackError
        ):
            yield body[netlink.NFGENMSG.size :]

    def dump(self) -> list[dict[str, Any]]:
        """Every entry of the namespace (IPv4 and IPv6): its tuple, mark and raw key."""
        flags = netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP
        seq = self._send(IPCTNL_MSG_CT_GET, flags, socket.AF_UNSPEC)
        entries: list[dict[str, Any]] = []
        for payload in self._messages(seq):
            attrs = netlink.attrs(payload)
            orig = attrs.get(CTA_TUPLE_ORIG)
            if orig is None:
                continue
            entry = parse_tuple(orig)
            mark = attrs.get(CTA_MARK)
            entry["mark"] = struct.unpack("!I", mark)[0] if mark and len(mark) == 4 else 0
            entry["key"] = orig.hex()
            ident = attrs.get(CTA_ID)
            entry["ct_id"] = struct.unpack("!I", ident)[0] if ident and len(ident) == 4 else None
            entries.append(entry)
            if len(entries) >= MAX_ENTRIES:
                break
        return entries

    def set_mark(self, entry: dict[str, Any], mark: int) -> bool:
        """OR `mark` into one entry's conntrack mark; False when it is already gone.

        Strict mode marks rather than deletes: a deleted TCP entry is picked up again by the
        next packet mid-stream, with the direction of whichever side sends first, so a reply
        from the side whose direction is open would resurrect the connection as "established".
        A marked entry keeps its true direction and the ruleset re-judges each packet of it.
        """
        family = socket.AF_INET if entry["family"] == 4 else socket.AF_INET6
        payload = netlink.nested(CTA_TUPLE_ORIG, bytes.fromhex(str(entry["key"])))
        payload += netlink.attr(CTA_MARK, struct.pack("!I", (int(entry.get("mark") or 0) | mark)))
        return self._acknowledged(IPCTNL_MSG_CT_NEW, family, payload)

    def delete(self, entry: dict[str, Any]) -> bool:
        """Delete one entry from `dump`; False when it is already gone."""
        family = socket.AF_INET if entry["family"] == 4 else socket.AF_INET6
        payload = netlink.nested(CTA_TUPLE_ORIG, bytes.fromhex(str(entry["key"])))
        if entry.get("ct_id") is not None:
            payload += netlink.attr(CTA_ID, struct.pack("!I", int(entry["ct_id"])))
        return self._acknowledged(IPCTNL_MSG_CT_DELETE, family, payload)

    def _acknowledged(self, msg_type: int, family: int, payload: bytes) -> bool:
        """Send one request and wait for its ack; False when the entry is already gone."""
        seq = self._send(msg_type, netlink.NLM_F_REQUEST | netlink.NLM_F_ACK, family, payload)
        try:
            for _ in self._messages(seq):
                pass
        except ConntrackError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        return True
