"""The interfaces, addresses and routes of the network namespace the calling thread is in, over
a plain rtnetlink socket (dumps: links for names, addresses for IPs, routes for next hops).

Why not pyroute2: the agent finds each pod's namespace by the pod's IP, so at start it lists
the addresses of every namespace on the node. Opening a pyroute2 IPRoute costs ~2 ms per
namespace (most of it building the socket object), ~0.25 s for a node of 110 pods, on the path
to readiness; these two dumps (the codec of `agent.dataplane.netlink`) cost a fraction of that.
Only the dataplane worker calls this, from inside the namespace (a netlink socket belongs to
the namespace it was opened in).
"""

from __future__ import annotations

import socket
import struct

from agent.dataplane import netlink

RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR = 16, 18, 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
IFLA_IFNAME, IFA_ADDRESS = 3, 1
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_MULTIPATH, RTA_TABLE = 1, 4, 5, 9, 15
RT_TABLE_MAIN, RTN_UNICAST = 254, 1
_IFINFO = 16  # struct ifinfomsg
_IFADDR = struct.Struct("=BBBBI")  # struct ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # struct rtmsg: family, dst_len, src_len, tos, table,
# protocol, scope, type, flags
_RTNH = struct.Struct("=HBBi")  # struct rtnexthop: length, flags, hops, ifindex
_RECV_BYTES = 1 << 16

NetlinkError = netlink.NetlinkError  # what a failed dump raises


def interfaces() -> list[dict[str, object]]:
    """[{"name", "addrs": sorted addresses}] per interface holding an address, loopback out."""
    return view(routes=False)[0]


def view(*, routes: bool = True) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """The namespace's interfaces (as `interfaces`) and, with `routes`, the unicast routes of
    its main table: [{"dst": "prefix/len", "gateway": next hop or None, "interface"}], one per
    next hop (a multipath route gives several); routes through loopback are left out."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink.NETLINK_ROUTE) as sock:
        names: dict[int, str] = {}
        for body in _dump(sock, RTM_GETLINK, bytes(_IFINFO), RTM_NEWLINK, 1):
            index = struct.unpack_from("=i", body, 4)[0]
            name = netlink.attrs(body, _IFINFO).get(IFLA_IFNAME, b"").split(b"\0", 1)[0]
            names[index] = name.decode(errors="replace")
        addrs: dict[int, list[str]] = {}
        for body in _dump(sock, RTM_GETADDR, _IFADDR.pack(0, 0, 0, 0, 0), RTM_NEWADDR, 2):
            family, _, _, _, index = _IFADDR.unpack_from(body)
            raw = netlink.attrs(body, _IFADDR.size).get(IFA_ADDRESS)
            if raw is None or family not in (socket.AF_INET, socket.AF_INET6):
                continue
            addrs.setdefault(index, []).append(socket.inet_ntop(family, raw))
        found_routes: list[dict[str, object]] = []
        if routes:
            request = _RTMSG.pack(0, 0, 0, 0, 0, 0, 0, 0, 0)
            for body in _dump(sock, RTM_GETROUTE, request, RTM_NEWROUTE, 3):
                found_routes += _routes(body, names)
    listed: list[dict[str, object]] = [
        {"name": names.get(index, ""), "addrs": sorted(found)}
        for index, found in sorted(addrs.items())
        if names.get(index) != "lo"
    ]
    return listed, found_routes


def _routes(body: bytes, names: dict[int, str]) -> list[dict[str, object]]:
    """The next hops of one RTM_NEWROUTE message of the main table (none for other tables,
    types or families)."""
    if len(body) < _RTMSG.size:
        return []
    family, dst_len, _, _, table, _, _, kind, _ = _RTMSG.unpack_from(body)
    attributes = netlink.attrs(body, _RTMSG.size)
    raw_table = attributes.get(RTA_TABLE)
    if raw_table is not None and len(raw_table) >= 4:
        table = struct.unpack_from("=I", raw_table)[0]
    if family not in (socket.AF_INET, socket.AF_INET6) or table != RT_TABLE_MAIN:
        return []
    if kind != RTN_UNICAST:
        return []
    size = 4 if family == socket.AF_INET else 16
    raw_dst = attributes.get(RTA_DST, b"")[:size].ljust(size, b"\0")
    dst = f"{socket.inet_ntop(family, raw_dst)}/{dst_len}"
    hops: list[tuple[int, bytes | None]] = []
    if RTA_OIF in attributes and len(attributes[RTA_OIF]) >= 4:
        hops.append((struct.unpack_from("=i", attributes[RTA_OIF])[0], attributes.get(RTA_GATEWAY)))
    multipath = attributes.get(RTA_MULTIPATH, b"")
    offset = 0
    while offset + _RTNH.size <= len(multipath):
        length, _, _, ifindex = _RTNH.unpack_from(multipath, offset)
        if length < _RTNH.size:
            break
        nested = netlink.attrs(multipath[offset : offset + length], _RTNH.size)
        hops.append((ifindex, nested.get(RTA_GATEWAY)))
        offset += netlink.align(length)
    out: list[dict[str, object]] = []
    for ifindex, gateway in hops:
        name = names.get(ifindex, "")
        if name == "lo":
            continue
        hop = socket.inet_ntop(family, gateway) if gateway and len(gateway) == size else None
        out.append({"dst": dst, "gateway": hop, "interface": name})
    return out


def _dump(sock: socket.socket, request: int, payload: bytes, answer: int, seq: int) -> list[bytes]:
    """The bodies of every `answer` message of one dump request."""
    flags = netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP
    sock.send(netlink.message(request, flags, seq, payload))
    return [
        body
        for header, body in netlink.responses(sock, seq, bufsize=_RECV_BYTES)
        if header.type == answer
    ]
