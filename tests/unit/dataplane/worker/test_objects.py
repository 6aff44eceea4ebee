"""The counter-object dump's codec (`agent.dataplane.worker.objects`): the request asks for
counters of one table in every family; a reply's objects of other tables, families or types
are skipped; a cut-short reply is an error, never a wrong count. The kernel side:
tests/kernel/test_worker_shed.py."""

from __future__ import annotations

import struct

import pytest

from agent.dataplane import netlink
from agent.dataplane.worker import objects


def body(family: int, table: str, name: str, packets: int, kind: int = 1) -> bytes:
    data = netlink.nested(
        objects.NFTA_OBJ_DATA,
        netlink.attr(1, struct.pack(">Q", 99)),  # bytes
        netlink.attr(objects.NFTA_COUNTER_PACKETS, struct.pack(">Q", packets)),
    )
    return (
        netlink.nfgen(family)
        + netlink.attr(objects.NFTA_OBJ_TABLE, table.encode() + b"\0")
        + netlink.attr(objects.NFTA_OBJ_NAME, name.encode() + b"\0")
        + netlink.attr(objects.NFTA_OBJ_TYPE, struct.pack(">I", kind))
        + data
    )


def test_the_request_is_a_dump_of_one_tables_counters() -> None:
    raw = objects.request("podseg", 4096)
    header = netlink.unpack_header(raw)
    assert header.type == 10 << 8 | 19 and header.flags & netlink.NLM_F_DUMP
    assert header.seq == 4096 and header.length == len(raw)
    found = netlink.attrs(raw, netlink.HEADER.size + netlink.NFGENMSG.size)
    assert found[objects.NFTA_OBJ_TABLE] == b"podseg\0"
    assert found[objects.NFTA_OBJ_TYPE] == struct.pack(">I", objects.NFT_OBJECT_COUNTER)


def test_a_counter_of_podsegs_tables_is_read_others_are_skipped() -> None:
    assert objects.parse("podseg", body(1, "podseg", "deny.x", 2**40)) == ("inet", "deny.x", 2**40)
    assert objects.parse("podseg", body(5, "podseg", "spoof", 3)) == ("netdev", "spoof", 3)
    assert objects.parse("podseg", body(1, "other", "deny.x", 3)) is None
    assert objects.parse("podseg", body(2, "podseg", "deny.x", 3)) is None  # ip family
    assert objects.parse("podseg", body(1, "podseg", "q", 3, kind=2)) is None  # a quota


def test_a_cut_short_reply_raises() -> None:
    whole = body(1, "podseg", "deny.x", 5)
    with pytest.raises(netlink.MalformedError):
        objects.parse("podseg", whole[:-6])
    with pytest.raises(netlink.MalformedError):
        objects.parse("podseg", whole[:2])
