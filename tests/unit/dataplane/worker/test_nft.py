"""The worker's nftables operations that need no kernel: the dump of a namespace's tables,
which decides whether a first commit may go in two steps (`agent.dataplane.nft.firstfill`)."""

from __future__ import annotations

import pytest

from agent.dataplane import netlink
from agent.dataplane.worker import nft as worker_nft


def test_the_tables_dump_request_and_its_answer() -> None:
    data = worker_nft.tables_request(77)
    header = netlink.unpack_header(data)
    assert header.seq == 77 and header.flags & netlink.NLM_F_DUMP == netlink.NLM_F_DUMP
    assert header.type == netlink.nfnl_type(10, worker_nft.NFT_MSG_GETTABLE)
    body = netlink.nfgen(1) + netlink.attr(worker_nft.NFTA_TABLE_NAME, b"podseg\0")
    assert worker_nft.parse_table(body) == ("inet", "podseg")
    assert worker_nft.parse_table(netlink.nfgen(5)) == ("netdev", "")
    assert worker_nft.parse_table(netlink.nfgen(99))[0] == "99"
    with pytest.raises(netlink.TruncatedError):
        worker_nft.parse_table(b"\x01")
