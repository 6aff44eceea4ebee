"""The nftables generation id of a network namespace, read over netlink (NFT_MSG_GETGEN).

Why: every committed nftables transaction in a namespace increments that namespace's
generation by one. After the agent's own commit, an unchanged generation proves nothing else
was committed there since, without listing the tables (a listing of a 10,000-element set costs
hundreds of milliseconds, the generation ~0.2 ms). The worker uses it to refuse an incremental
update on tables someone else may have touched, and to skip the read-back at resync when
nothing changed. Only the dataplane worker imports this module, from inside the namespace.
"""

from __future__ import annotations

from pyroute2.netlink import NLM_F_REQUEST
from pyroute2.netlink.nfnetlink import nftsocket

MASK = 0xFFFFFFFF


class Reader:
    """A netlink socket bound to the namespace it was created in."""

    def __init__(self) -> None:
        self._sock = nftsocket.NFTSocket()

    def get(self) -> int:
        msg = nftsocket.nft_gen_msg()
        msg["nfgen_family"] = 0
        reply = self._sock.request_get(
            msg, msg_type=nftsocket.NFT_MSG_GETGEN, msg_flags=NLM_F_REQUEST
        )
        return int(reply[0].get_attr("NFTA_GEN_ID"))

    def close(self) -> None:
        self._sock.close()


def follows(before: int, after: int) -> bool:
    """Whether `after` is the generation right after `before` (one commit, ours)."""
    return after == (before + 1) & MASK
