"""Reads the packet counts of podseg's named counters over netlink (an NFT_MSG_GETOBJ dump).

Why not `nft list counters`: libnftables fills its cache for that command with the tables'
sets and their elements, and the worker keeps one context per namespace open between requests
(`namespaces`), so every namespace whose counters were read held a copy of its peer sets in
the worker: about 7 MiB per namespace with broad peers, 160 MiB for 32 open contexts. A dump
of the counter objects moves only the counters, and it needs no context at all. Runs inside
the namespace, on the namespace's netfilter socket (`Namespaces.element_socket`).
"""

from __future__ import annotations

import errno
import socket
import struct

from agent.dataplane import netlink

NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETOBJ = 19
NFTA_OBJ_TABLE, NFTA_OBJ_NAME, NFTA_OBJ_TYPE, NFTA_OBJ_DATA = 1, 2, 3, 4
NFT_OBJECT_COUNTER = 1
NFTA_COUNTER_PACKETS = 2
FAMILIES = {1: "inet", 5: "netdev"}  # NFPROTO_INET, NFPROTO_NETDEV: podseg's two tables
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")


def request(table: str, seq: int) -> bytes:
    """A dump of the counter objects of tables named `table`, every family."""
    payload = netlink.nfgen(socket.AF_UNSPEC) + netlink.attr(NFTA_OBJ_TABLE, table.encode() + b"\0")
    payload += netlink.attr(NFTA_OBJ_TYPE, _BE32.pack(NFT_OBJECT_COUNTER))
    kind = netlink.nfnl_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETOBJ)
    return netlink.message(kind, netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP, seq, payload)


def parse(table: str, body: bytes) -> tuple[str, str, int] | None:
    """(family, counter name, packets) of one dumped object of `table`; None for anything
    else (another table, family or object type)."""
    if len(body) < netlink.NFGENMSG.size:
        raise netlink.TruncatedError("nfgenmsg cut short")
    family = FAMILIES.get(netlink.NFGENMSG.unpack_from(body)[0])
    found = netlink.attrs(body, netlink.NFGENMSG.size)
    kind = found.get(NFTA_OBJ_TYPE, b"")
    if family is None or len(kind) != 4 or _BE32.unpack(kind)[0] != NFT_OBJECT_COUNTER:
        return None
    if found.get(NFTA_OBJ_TABLE, b"").rstrip(b"\0").decode(errors="replace") != table:
        return None
    name = found.get(NFTA_OBJ_NAME, b"").rstrip(b"\0").decode(errors="replace")
    packets = netlink.attrs(found.get(NFTA_OBJ_DATA, b"")).get(NFTA_COUNTER_PACKETS, b"")
    if not name or len(packets) != 8:
        return None
    return family, name, int(_BE64.unpack(packets)[0])


def counters(sock: netlink.Socket, table: str, seq: int) -> dict[str, dict[str, int]]:
    """Packet counts of the named counters of the tables called `table`, by family."""
    sock.send(request(table, seq))
    values: dict[str, dict[str, int]] = {}
    for _, body in netlink.responses(sock, seq):
        try:
            found = parse(table, body)
        except netlink.MalformedError as exc:
            raise netlink.NetlinkError(errno.EPROTO, f"malformed counter object: {exc}") from exc
        if found is not None:
            family, name, packets = found
            values.setdefault(family, {})[name] = packets
    return values
