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

import socket
import struct
import threading
from collections.abc import Sequence

from agent.calc import ruleset
from agent.dataplane import netlink, protocol
from agent.dataplane.nft import firstfill

NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE = 0, 2
NFT_MSG_NEWRULE, NFT_MSG_DELRULE = 6, 8
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14
NFPROTO_INET = 1
NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x200, 0x400, 0x800

NFTA_TABLE_NAME = 1
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


class _Batch:
    """One nfnetlink transaction being built: messages after the batch begin, each acked."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.parts = [_begin(seq)]
        self.acked: list[int] = []

    def add(self, kind: int, flags: int, payload: bytes, family: int = NFPROTO_INET) -> None:
        number = self.seq + 1 + len(self.acked)
        self.acked.append(number)
        self.parts.append(
            netlink.message(
                netlink.nfnl_type(NFNL_SUBSYS_NFTABLES, kind),
                netlink.NLM_F_REQUEST | netlink.NLM_F_ACK | flags,
                number,
                netlink.nfgen(family) + payload,
            )
        )

    def elements(self, kind: int, flags: int, table: str, name: str, encoded: list[bytes]) -> None:
        """Set-element messages of `encoded` elements, as many as `chunks` makes."""
        for chunk in chunks(encoded):
            self.lists(kind, flags, table, name, chunk)

    def lists(self, kind: int, flags: int, table: str, name: str, joined: bytes) -> None:
        """One set-element message holding `joined` (encoded elements, one after another)."""
        head = _str(NFTA_SET_ELEM_LIST_TABLE, table) + _str(NFTA_SET_ELEM_LIST_SET, name)
        self.add(kind, flags, head + netlink.attr(NFTA_SET_ELEM_LIST_ELEMENTS | NESTED, joined))

    def done(self) -> tuple[bytes, list[int]]:
        self.parts.append(_end(self.seq + 1 + len(self.acked)))
        return b"".join(self.parts), self.acked


LIST_MAX = 60_000  # bytes of elements per message (an attribute's length is 16 bits)
NESTED = netlink.NLA_F_NESTED


def chunks(encoded: list[bytes]) -> list[bytes]:
    """`encoded` elements joined into runs of at most LIST_MAX bytes (one element each at
    least), in order: the element lists of as few messages as the attribute limit allows."""
    out: list[bytes] = []
    start, size = 0, 0
    for n, element in enumerate(encoded):
        if size + len(element) > LIST_MAX and n > start:
            out.append(b"".join(encoded[start:n]))
            start, size = n, 0
        size += len(element)
    if start < len(encoded):
        out.append(b"".join(encoded[start:]))
    return out


def batch(
    table: str, state_chain: str, comment: str, changes: tuple[protocol.SetChange, ...], seq: int
) -> tuple[bytes, list[int]]:
    """The transaction's datagram and the sequence numbers of its messages that are acked
    (every one but the batch delimiters)."""
    out = _Batch(seq)
    where = _str(NFTA_RULE_TABLE, table) + _str(NFTA_RULE_CHAIN, state_chain)
    out.add(NFT_MSG_DELRULE, 0, where)
    out.add(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, where + _return_rule(comment))
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
            out.elements(verb, flags, table, change.name, encoded)
    return out.done()


def fill_batch(
    table: str,
    state_chain: str,
    comment: str,
    fills: Sequence[firstfill.Fill],
    seq: int,
    drop: str | None = None,
) -> tuple[bytes, list[int]]:
    """Step 2 of a split first commit (`agent.dataplane.nft.firstfill`) as one transaction:
    every fill's elements into its (empty) set, the rule of chain `state` (empty) and, with
    `drop`, the removal of `table inet <drop>` (created first if absent, as nft's
    `table x; delete table x` does). The datagram and its acked sequence numbers."""
    out = _Batch(seq)
    for fill in fills:
        for joined in encode_fill(fill):
            out.lists(NFT_MSG_NEWSETELEM, NLM_F_CREATE, table, fill.name, joined)
    where = _str(NFTA_RULE_TABLE, table) + _str(NFTA_RULE_CHAIN, state_chain)
    out.add(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, where + _return_rule(comment))
    if drop is not None:
        out.add(NFT_MSG_NEWTABLE, NLM_F_CREATE, _str(NFTA_TABLE_NAME, drop))
        out.add(NFT_MSG_DELTABLE, 0, _str(NFTA_TABLE_NAME, drop))
    return out.done()


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


def _proto_port(proto: int, port: int) -> bytes:
    """`inet_proto . inet_service` fields of a concatenation, each padded to 32 bits."""
    return bytes((proto, 0, 0, 0)) + port.to_bytes(2, "big") + b"\0\0"


def _port_elements(family: int, items: tuple[tuple[int, ...], ...], interval: bool) -> list[bytes]:
    """Concatenations `addr . proto . port`: in an interval set (pipapo) an element is its
    first and its last key, in a hash set its one key."""
    out = []
    for first, last, proto, low, high in items:
        keys = [_key(NFTA_SET_ELEM_KEY, _addr(family, first) + _proto_port(proto, low))]
        if interval:
            end = _addr(family, last) + _proto_port(proto, high)
            keys.append(_key(NFTA_SET_ELEM_KEY_END, end))
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
    """Concatenations `inet_proto . inet_service` (pipapo): first and last key."""
    return [
        netlink.nested(
            NFTA_LIST_ELEM,
            _key(NFTA_SET_ELEM_KEY, _proto_port(proto, low)),
            _key(NFTA_SET_ELEM_KEY_END, _proto_port(proto, high)),
        )
        for proto, low, high in items
    ]


# -- a first commit's elements, from the script's text (`agent.dataplane.nft.firstfill`) ------
def encode_fill(fill: firstfill.Fill) -> list[bytes]:
    """The encoded elements of `fill` in `chunks`, encoded as `_addr_elements` (an interval
    set) or `_port_elements` without interval (a hash set) encode the same elements from
    numbers. The pods of a node share many peer sets (every pod a broad policy selects holds
    its peers), so the encodings of the last sets are kept by their text (`_Kept`)."""
    key = (fill.family, fill.exact, fill.texts)
    found = _KEPT.get(key)
    if found is None:
        made = _exact_from_text if fill.exact else _addrs_from_text
        found = chunks(made(fill.family, fill.texts.split(firstfill.SEPARATOR)))
        _KEPT.put(key, found)
    return found


class _Kept:
    """The last encodings made, up to `most` bytes (texts and encodings), the least recently
    used dropped first; shared by the worker's threads."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.entries: dict[tuple[int, bool, str], tuple[list[bytes], int]] = {}
        self.size = 0
        self.lock = threading.Lock()

    def get(self, key: tuple[int, bool, str]) -> list[bytes] | None:
        with self.lock:
            entry = self.entries.pop(key, None)
            if entry is None:
                return None
            self.entries[key] = entry  # now the most recently used
            return list(entry[0])

    def put(self, key: tuple[int, bool, str], encoded: list[bytes]) -> None:
        size = len(key[2]) + sum(map(len, encoded))
        if size > self.most:
            return
        with self.lock:
            old = self.entries.pop(key, None)
            self.size += size - (old[1] if old is not None else 0)
            self.entries[key] = (encoded, size)
            while self.size > self.most:
                self.size -= self.entries.pop(next(iter(self.entries)))[1]

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()
            self.size = 0


CACHE_BYTES = 1 << 20  # ~10,000 elements with their texts
_KEPT = _Kept(CACHE_BYTES)


def clear_cache() -> None:
    """Forget the kept encodings (benchmarks: every pod's sets encoded afresh)."""
    _KEPT.clear()


_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_PROTOCOLS = {name.lower(): number for name, number in ruleset.PROTOCOL_NUMBERS.items()}


def _head(length: int) -> bytes:
    """The headers of a list element holding one key of `length` bytes: the element, the key,
    the value."""
    return netlink.ATTR.pack(12 + length, NFTA_LIST_ELEM | netlink.NLA_F_NESTED) + (
        netlink.ATTR.pack(8 + length, NFTA_SET_ELEM_KEY | netlink.NLA_F_NESTED)
        + netlink.ATTR.pack(4 + length, NFTA_DATA_VALUE)
    )


def _addrs_from_text(family: int, items: list[str]) -> list[bytes]:
    """An address interval set's elements (`render_nft.format_addr` texts: `a`, `a/len`,
    `a-b`) as start and INTERVAL_END elements (see `_addr_elements`)."""
    af, size = _AF[family], _BITS[family] // 8
    top = 1 << _BITS[family]  # one past the last address: a range ending there has no end
    start_head = _head(size)
    end_head = (
        netlink.ATTR.pack(20 + size, NFTA_LIST_ELEM | netlink.NLA_F_NESTED)
        + netlink.ATTR.pack(8 + size, NFTA_SET_ELEM_KEY | netlink.NLA_F_NESTED)
        + netlink.ATTR.pack(4 + size, NFTA_DATA_VALUE)
    )
    end_tail = netlink.attr(NFTA_SET_ELEM_FLAGS, _BE32.pack(NFT_SET_ELEM_INTERVAL_END))
    bits = _BITS[family]
    pton, number = socket.inet_pton, int.from_bytes
    out: list[bytes] = []
    add = out.append
    for text in items:
        address, dash, last = text.partition("-")
        if dash:
            first = pton(af, address)
            after = number(pton(af, last), "big") + 1
        else:
            address, slash, length = text.partition("/")
            first = pton(af, address)
            after = number(first, "big") + (1 << (bits - int(length)) if slash else 1)
        add(start_head + first)
        if after != top:
            add(end_head + after.to_bytes(size, "big") + end_tail)
    return out


def _exact_from_text(family: int, items: list[str]) -> list[bytes]:
    """A hash set's `addr . proto . port` elements (`render_nft.port_elements` texts of one
    address and one port) as their one key (see `_port_elements`)."""
    af = _AF[family]
    head = _head(_BITS[family] // 8 + 8)
    pton = socket.inet_pton
    out = []
    for text in items:
        address, proto, port = text.split(" . ")
        number = _PROTOCOLS.get(proto)
        key = pton(af, address) + _proto_port(int(proto) if number is None else number, int(port))
        out.append(head + key)
    return out
