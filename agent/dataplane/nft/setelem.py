"""A set-element patch of `table inet podseg` as one nfnetlink batch, without libnftables.

Why: libnftables reads every element of an interval set back from the kernel before it adds
or deletes one (to check overlaps), so one element into a 6,000-element set costs ~34 ms, as
much as replacing the whole table; the same change sent as netlink messages costs well under
a millisecond. The element patch (`agent.dataplane.nft.fastpatch`) already knows the exact
canonical elements to delete and add, so nothing needs reading: this module encodes them, and
the new fingerprint rule of chain `state`, into ONE transaction (batch begin, a flush of chain
`state`, the rule, the element deletes, the element adds, batch end), as nft itself would
send them:

* an address set (`ipv4_addr`/`ipv6_addr`, flags interval: the kernel's rbtree) holds a
  range as a start element and an end element one past its last address flagged
  INTERVAL_END; a range ending at the family's last address has no end element;
* a concatenated set (`addr . inet_proto . inet_service`, flags interval: pipapo) holds an
  element as its first key and its last key (KEY_END), each field padded to 32 bits; the
  same without flags (a hash set: one address, one port) as its one key. The peer sets use
  the hash form only (kind "exact"): a range goes to the address set of its port spec;
* an admin tier's sets (`agent.dataplane.nft.tierpatch`) are concatenated interval sets too:
  `addr . nf_proto` (kind "addrproto") and `inet_proto . inet_service` (kind "services").

The elements of an `any` set never touch; those of a port spec's address set may (two
address runs allowing the same ports among others): the end element of one and the start
element of the next then share a key, which the kernel tells apart by the INTERVAL_END flag.
The deletes come first.
No I/O here: bytes only; the dataplane worker sends them from inside the pod's namespace.
"""

from __future__ import annotations

import struct

from agent.dataplane import netlink, protocol

NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWRULE, NFT_MSG_DELRULE = 6, 8
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14
NFPROTO_INET = 1
NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x200, 0x400, 0x800

NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS, NFTA_RULE_USERDATA = 1, 2, 4, 7
NFTA_LIST_ELEM = 1
NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 2
NFTA_IMMEDIATE_DREG, NFTA_IMMEDIATE_DATA = 1, 2
NFTA_DATA_VALUE, NFTA_DATA_VERDICT = 1, 2
NFTA_VERDICT_CODE = 1
NFT_REG_VERDICT = 0
NFT_RETURN = -5
NFTNL_UDATA_RULE_COMMENT = 0
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_FLAGS, NFTA_SET_ELEM_KEY_END = 1, 3, 10
NFT_SET_ELEM_INTERVAL_END = 1

_BE32 = struct.Struct("!I")
_BITS = {4: 32, 6: 128}


def batch(
    table: str, state_chain: str, comment: str, changes: tuple[protocol.SetChange, ...], seq: int
) -> tuple[bytes, list[int]]:
    """The transaction's datagram and the sequence numbers of its messages that are acked
    (every one but the batch delimiters)."""
    parts = [_begin(seq)]
    acked: list[int] = []

    def add(kind: int, flags: int, payload: bytes) -> None:
        number = seq + 1 + len(acked)
        acked.append(number)
        msg_type = netlink.nfnl_type(NFNL_SUBSYS_NFTABLES, kind)
        parts.append(
            netlink.message(
                msg_type,
                netlink.NLM_F_REQUEST | netlink.NLM_F_ACK | flags,
                number,
                netlink.nfgen(NFPROTO_INET) + payload,
            )
        )

    where = _str(NFTA_RULE_TABLE, table) + _str(NFTA_RULE_CHAIN, state_chain)
    add(NFT_MSG_DELRULE, 0, where)
    add(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, where + _return_rule(comment))
    for verb, flags, deleting in (
        (NFT_MSG_DELSETELEM, 0, True),
        (NFT_MSG_NEWSETELEM, NLM_F_CREATE, False),
    ):
        for change in changes:
            items = change.deleted if deleting else change.added
            if not items:
                continue
            if change.kind == "any":
                encoded = _addr_elements(change.family, items)
            elif change.kind == "addrproto":
                encoded = _addr_proto_elements(change.family, items)
            elif change.kind == "services":
                encoded = _service_elements(items)
            else:
                encoded = _port_elements(change.family, items, change.kind == "ports")
            elements = netlink.nested(NFTA_SET_ELEM_LIST_ELEMENTS, *encoded)
            payload = (
                _str(NFTA_SET_ELEM_LIST_TABLE, table)
                + _str(NFTA_SET_ELEM_LIST_SET, change.name)
                + elements
            )
            add(verb, flags, payload)
    parts.append(_end(seq + 1 + len(acked)))
    return b"".join(parts), acked


def _begin(seq: int) -> bytes:
    return netlink.message(
        NFNL_MSG_BATCH_BEGIN, netlink.NLM_F_REQUEST, seq, netlink.nfgen(0, NFNL_SUBSYS_NFTABLES)
    )


def _end(seq: int) -> bytes:
    return netlink.message(
        NFNL_MSG_BATCH_END, netlink.NLM_F_REQUEST, seq, netlink.nfgen(0, NFNL_SUBSYS_NFTABLES)
    )


def _str(kind: int, text: str) -> bytes:
    return netlink.attr(kind, text.encode() + b"\0")


def _return_rule(comment: str) -> bytes:
    """The expressions of `return` and the rule's comment (nft's user data TLV)."""
    verdict = netlink.nested(
        NFTA_IMMEDIATE_DATA,
        netlink.nested(
            NFTA_DATA_VERDICT, netlink.attr(NFTA_VERDICT_CODE, _BE32.pack(NFT_RETURN & 0xFFFFFFFF))
        ),
    )
    immediate = netlink.nested(
        NFTA_LIST_ELEM,
        _str(NFTA_EXPR_NAME, "immediate"),
        netlink.nested(
            NFTA_EXPR_DATA,
            netlink.attr(NFTA_IMMEDIATE_DREG, _BE32.pack(NFT_REG_VERDICT)),
            verdict,
        ),
    )
    text = comment.encode() + b"\0"
    if len(text) > 255:
        raise ValueError("rule comment too long")
    udata = bytes((NFTNL_UDATA_RULE_COMMENT, len(text))) + text
    return netlink.nested(NFTA_RULE_EXPRESSIONS, immediate) + netlink.attr(
        NFTA_RULE_USERDATA, udata
    )


def _addr(family: int, value: int) -> bytes:
    return value.to_bytes(_BITS[family] // 8, "big")


def _key(kind: int, data: bytes) -> bytes:
    return netlink.nested(kind, netlink.attr(NFTA_DATA_VALUE, data))


def _addr_elements(family: int, items: tuple[tuple[int, ...], ...]) -> list[bytes]:
    """rbtree: a start element per range, and an INTERVAL_END element one past its end
    (none when the range runs to the family's last address)."""
    top = (1 << _BITS[family]) - 1
    out = []
    for first, last in items:
        out.append(netlink.nested(NFTA_LIST_ELEM, _key(NFTA_SET_ELEM_KEY, _addr(family, first))))
        if last != top:
            out.append(
                netlink.nested(
                    NFTA_LIST_ELEM,
                    _key(NFTA_SET_ELEM_KEY, _addr(family, last + 1)),
                    netlink.attr(NFTA_SET_ELEM_FLAGS, _BE32.pack(NFT_SET_ELEM_INTERVAL_END)),
                )
            )
    return out


def _port_elements(family: int, items: tuple[tuple[int, ...], ...], interval: bool) -> list[bytes]:
    """Concatenations `addr . proto . port`, each field padded to 32 bits: in an interval set
    (pipapo) an element is its first and its last key, in a hash set its one key."""
    out = []
    for first, last, proto, low, high in items:
        start = _addr(family, first) + bytes((proto, 0, 0, 0)) + low.to_bytes(2, "big") + b"\0\0"
        keys = [_key(NFTA_SET_ELEM_KEY, start)]
        if interval:
            end = _addr(family, last) + bytes((proto, 0, 0, 0)) + high.to_bytes(2, "big")
            keys.append(_key(NFTA_SET_ELEM_KEY_END, end + b"\0\0"))
        out.append(netlink.nested(NFTA_LIST_ELEM, *keys))
    return out


# NFPROTO_IPV4 / NFPROTO_IPV6: the `nf_proto` field of an `addr . nf_proto` key
_NFPROTO = {4: 2, 6: 10}


def _addr_proto_elements(family: int, items: tuple[tuple[int, ...], ...]) -> list[bytes]:
    """Concatenations `addr . nf_proto` (pipapo): an element is its first key and its last
    key (KEY_END), the one-byte `nf_proto` padded to 32 bits."""
    proto = bytes((_NFPROTO[family], 0, 0, 0))
    return [
        netlink.nested(
            NFTA_LIST_ELEM,
            _key(NFTA_SET_ELEM_KEY, _addr(family, first) + proto),
            _key(NFTA_SET_ELEM_KEY_END, _addr(family, last) + proto),
        )
        for first, last in items
    ]


def _service_elements(items: tuple[tuple[int, ...], ...]) -> list[bytes]:
    """Concatenations `inet_proto . inet_service` (pipapo): first and last key, each field
    padded to 32 bits."""
    out = []
    for proto, low, high in items:
        head = bytes((proto, 0, 0, 0))
        out.append(
            netlink.nested(
                NFTA_LIST_ELEM,
                _key(NFTA_SET_ELEM_KEY, head + low.to_bytes(2, "big") + b"\0\0"),
                _key(NFTA_SET_ELEM_KEY_END, head + high.to_bytes(2, "big") + b"\0\0"),
            )
        )
    return out
