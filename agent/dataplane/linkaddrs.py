"""The interfaces and addresses of the network namespace the calling thread is in, over a
plain rtnetlink socket (two dumps: links for names, addresses for IPs).

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
IFLA_IFNAME, IFA_ADDRESS = 3, 1
_IFINFO = 16  # struct ifinfomsg
_IFADDR = struct.Struct("=BBBBI")  # struct ifaddrmsg: family, prefixlen, flags, scope, index
_RECV_BYTES = 1 << 16

NetlinkError = netlink.NetlinkError  # what a failed dump raises


def interfaces() -> list[dict[str, object]]:
    """[{"name", "addrs": sorted addresses}] per interface holding an address, loopback out."""
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
    return [
        {"name": names.get(index, ""), "addrs": sorted(found)}
        for index, found in sorted(addrs.items())
        if names.get(index) != "lo"
    ]


def _dump(sock: socket.socket, request: int, payload: bytes, answer: int, seq: int) -> list[bytes]:
    """The bodies of every `answer` message of one dump request."""
    flags = netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP
    sock.send(netlink.message(request, flags, seq, payload))
    return [
        body
        for header, body in netlink.responses(sock, seq, bufsize=_RECV_BYTES)
        if header.type == answer
    ]
