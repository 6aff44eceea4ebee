"""nftables change notifications reduced to what podseg needs: the generation of each commit.

Every committed nftables transaction in a namespace is announced to the netlink multicast group
NFNLGRP_NFTABLES of that namespace: one message per object the transaction touched (tables,
chains, rules, every set element), then one NFT_MSG_NEWGEN carrying the namespace's new
generation id, the pid and the name of the committing process. podseg listens only for that
last message (`agent.dataplane.watcher`): a generation that is not the one of the agent's own
commit means someone else changed the namespace's rules, and the agent reads it back at once.

Why not `nft monitor`: it decodes every object of every transaction into text and has crashed
on big sets; a NEWGEN message is 48 bytes. Why a socket filter: the kernel sends NEWGEN in a
datagram of its own (after the per-object messages, which it coalesces), so a classic BPF
program that keeps only datagrams whose first message is a NEWGEN spares the reader every
set element of a large commit, and its receive buffer the overrun.

Kernel input is never trusted: a datagram that does not parse raises `netlink.MalformedError`.
Pure apart from `filter_program` building bytes for `setsockopt`.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from agent.dataplane import netlink

NFNLGRP_NFTABLES = 7
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWGEN = 15
NFTA_GEN_ID, NFTA_GEN_PROC_PID, NFTA_GEN_PROC_NAME = 1, 2, 3
NEWGEN = netlink.nfnl_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWGEN)
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
SO_ATTACH_FILTER = 26

_BE32 = struct.Struct("!I")
_SOCK_FILTER = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k
# Classic BPF opcodes: load half-word at absolute offset, jump if equal, return.
_LD_H_ABS, _JEQ_K, _RET_K = 0x28, 0x15, 0x06


class Commit(NamedTuple):
    """One NEWGEN notification: the namespace's generation after a commit, and who made it
    (pid and command name as the kernel saw them; logged, never trusted for a decision)."""

    generation: int
    pid: int | None
    process: str


def commits(data: bytes) -> list[Commit]:
    """The NEWGEN notifications of a datagram; other messages are skipped. MalformedError
    (TruncatedError) for a datagram that does not parse."""
    found: list[Commit] = []
    for header, body in netlink.messages(data):
        if header.type != NEWGEN:
            continue
        attrs = netlink.attrs(body, netlink.NFGENMSG.size)
        gen = attrs.get(NFTA_GEN_ID)
        if gen is None or len(gen) != _BE32.size:
            raise netlink.MalformedError("NEWGEN without a generation id")
        pid = attrs.get(NFTA_GEN_PROC_PID)
        name = attrs.get(NFTA_GEN_PROC_NAME, b"").split(b"\0", 1)[0]
        found.append(
            Commit(
                _BE32.unpack(gen)[0],
                _BE32.unpack(pid)[0] if pid is not None and len(pid) == _BE32.size else None,
                name.decode(errors="replace"),
            )
        )
    return found


def filter_program() -> bytes:
    """The `struct sock_filter` array that keeps a datagram only when its first message is a
    NEWGEN (nlmsg_type, host byte order, at offset 4; BPF loads it big-endian)."""
    wanted = struct.unpack("!H", struct.pack("=H", NEWGEN))[0]
    program = (
        (_LD_H_ABS, 0, 0, 4),
        (_JEQ_K, 0, 1, wanted),
        (_RET_K, 0, 0, 0xFFFF),  # keep (up to 64 KiB)
        (_RET_K, 0, 0, 0),  # drop
    )
    return b"".join(_SOCK_FILTER.pack(*op) for op in program)
