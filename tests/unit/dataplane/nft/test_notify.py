"""nftables change notifications without a kernel: the NEWGEN message of a commit gives its
generation, pid and process; other notifications are skipped; a message lying about its content
raises; the socket filter keeps exactly the datagrams that start with a NEWGEN."""

from __future__ import annotations

import struct

import pytest

from agent.dataplane import netlink
from agent.dataplane.nft import notify

NEWTABLE = netlink.nfnl_type(notify.NFNL_SUBSYS_NFTABLES, 0)


def newgen(generation: int, pid: int = 4242, name: bytes = b"nft\0") -> bytes:
    body = netlink.nfgen(0, generation & 0xFFFF)
    body += netlink.attr(notify.NFTA_GEN_ID, struct.pack("!I", generation))
    body += netlink.attr(notify.NFTA_GEN_PROC_PID, struct.pack("!I", pid))
    body += netlink.attr(notify.NFTA_GEN_PROC_NAME, name)
    return netlink.message(notify.NEWGEN, 0, 0, body)


def other(kind: int = NEWTABLE) -> bytes:
    body = netlink.nfgen(1) + netlink.attr(1, b"evil\0")
    message = netlink.message(kind, 0, 0, body)
    return message + b"\0" * (netlink.align(len(message)) - len(message))


def test_newgen_gives_the_generation_and_who_committed() -> None:
    assert notify.commits(newgen(7)) == [notify.Commit(7, 4242, "nft")]
    assert notify.commits(other() + newgen(2**32 - 1, name=b"x")) == [
        notify.Commit(2**32 - 1, 4242, "x")
    ]
    assert notify.commits(other() + other()) == []


def test_a_newgen_without_its_generation_or_cut_short_raises() -> None:
    bare = netlink.message(notify.NEWGEN, 0, 0, netlink.nfgen(0))
    with pytest.raises(netlink.MalformedError):
        notify.commits(bare)
    with pytest.raises(netlink.TruncatedError):
        notify.commits(newgen(3)[:-4])


def run_filter(program: bytes, packet: bytes) -> int:
    """A tiny classic-BPF interpreter for the opcodes the filter uses."""
    ops = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = ops[pc]
        if code == 0x28:  # ld half-word, absolute, big-endian
            acc = struct.unpack_from("!H", packet, k)[0]
            pc += 1
        elif code == 0x15:  # jeq
            pc += 1 + (jt if acc == k else jf)
        elif code == 0x06:  # ret
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def test_the_socket_filter_keeps_only_datagrams_that_start_with_a_newgen() -> None:
    program = notify.filter_program()
    assert len(program) % 8 == 0
    assert run_filter(program, newgen(5)) > 0
    assert run_filter(program, other()) == 0
    assert run_filter(program, other(netlink.nfnl_type(notify.NFNL_SUBSYS_NFTABLES, 12))) == 0
