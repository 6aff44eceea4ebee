"""The netlink wire format, shared by podseg's three raw netlink clients.

Why: ctnetlink (`agent.dataplane.conntrack`), rtnetlink (`agent.dataplane.linkaddrs`) and
nfnetlink_log (`agent.flows.nflog`) are each spoken over a plain socket with `struct`, since
pyroute2 costs milliseconds per socket or dump where these cost microseconds. They share one
codec here: the message header, attributes (alignment, the nested/byte-order flags masked off
the type), the walk over a datagram that holds several messages, and the loop that reads the
answers to one request until NLMSG_DONE or the ack, turning an NLMSG_ERROR into an errno.

Kernel input is never trusted: a message or attribute whose length runs past its buffer, or is
shorter than its own header, raises `MalformedError` (`TruncatedError` when the data is merely
cut short), which a caller either counts (NFLOG) or reports as a `NetlinkError` (the dumps).
No sockets are opened here: `responses` reads from any object with `send`/`recv`.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterator
from typing import NamedTuple, Protocol

NETLINK_ROUTE = 0
NETLINK_NETFILTER = 12

NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = 0x3FFF  # an attribute's type without the two flags above
NFNETLINK_V0 = 0

HEADER = struct.Struct("=IHHII")  # struct nlmsghdr: length, type, flags, sequence, port id
ATTR = struct.Struct("=HH")  # struct nlattr (rtattr alike): length, type
NFGENMSG = struct.Struct("!BBH")  # struct nfgenmsg: family, version, res_id (big endian)
_ERROR = struct.Struct("=i")  # struct nlmsgerr starts with the negative errno (0: an ack)


class Header(NamedTuple):
    """A netlink message header (`struct nlmsghdr`)."""

    length: int
    type: int
    flags: int
    seq: int
    pid: int = 0


class MalformedError(ValueError):
    """Netlink data that does not parse: a length shorter than the header it counts."""


class TruncatedError(MalformedError):
    """Netlink data cut short: a header, message or attribute runs past the end."""


class NetlinkError(OSError):
    """The kernel answered a request with an error (`errno`), or with malformed data."""


class Socket(Protocol):
    """What `responses` needs of a netlink socket (`socket.socket` has it)."""

    def send(self, data: bytes, /) -> int: ...

    def recv(self, bufsize: int, /) -> bytes: ...


def align(length: int) -> int:
    """`length` rounded up to netlink's 4-byte alignment."""
    return (length + 3) & ~3


def message(kind: int, flags: int, seq: int, payload: bytes = b"", pid: int = 0) -> bytes:
    """One netlink message: the header (its length counting the header) and `payload`."""
    return HEADER.pack(HEADER.size + len(payload), kind, flags, seq, pid) + payload


def nfnl_type(subsystem: int, msg: int) -> int:
    """The message type of an nfnetlink message: subsystem in the high byte."""
    return (subsystem << 8) | msg


def nfgen(family: int, res_id: int = 0) -> bytes:
    """A `struct nfgenmsg` (the fixed part of every nfnetlink message)."""
    return NFGENMSG.pack(family, NFNETLINK_V0, res_id)


def unpack_header(data: bytes, offset: int = 0) -> Header:
    """The header at `offset`; TruncatedError when fewer than 16 bytes remain."""
    if len(data) - offset < HEADER.size:
        raise TruncatedError(f"netlink header cut short at {offset}")
    return Header._make(HEADER.unpack_from(data, offset))


def messages(data: bytes) -> Iterator[tuple[Header, bytes]]:
    """Each (header, body) of a datagram holding one message or a batch of them.

    Yields the well-formed messages before any fault, then raises: TruncatedError for a header
    or message cut short, MalformedError for a length shorter than the header."""
    offset = 0
    while offset < len(data):
        header = unpack_header(data, offset)
        if header.length < HEADER.size:
            raise MalformedError(f"netlink message length {header.length} at {offset}")
        end = offset + header.length
        if end > len(data):
            raise TruncatedError(f"netlink message of {header.length} bytes cut short")
        yield header, data[offset + HEADER.size : end]
        offset += align(header.length)


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute: its header, `payload` and the padding to the next alignment."""
    length = ATTR.size + len(payload)
    return ATTR.pack(length, kind) + payload + b"\0" * (align(length) - length)


def nested(kind: int, *children: bytes) -> bytes:
    """An attribute holding `children` (packed attributes), flagged NLA_F_NESTED."""
    return attr(kind | NLA_F_NESTED, b"".join(children))


def iter_attrs(data: bytes, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """Each (type without flags, payload) of the attributes in `data` from `offset`.

    Bytes after the last attribute too few for a header are ignored (padding); an attribute
    running past the end raises TruncatedError, one shorter than its header MalformedError."""
    while offset + ATTR.size <= len(data):
        length, kind = ATTR.unpack_from(data, offset)
        if length < ATTR.size:
            raise MalformedError(f"netlink attribute length {length} at {offset}")
        if offset + length > len(data):
            raise TruncatedError(f"netlink attribute of {length} bytes cut short")
        yield kind & NLA_TYPE_MASK, data[offset + ATTR.size : offset + length]
        offset += align(length)


def attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """The attributes of `data` by type (flags masked off); a repeated type keeps the last."""
    return dict(iter_attrs(data, offset))


def error_code(body: bytes) -> int:
    """The errno of an NLMSG_ERROR body (positive; 0 for an ack)."""
    if len(body) < _ERROR.size:
        raise TruncatedError("netlink error message cut short")
    return -int(_ERROR.unpack_from(body)[0])


def responses(
    sock: Socket,
    seq: int,
    *,
    bufsize: int = 1 << 16,
    error: type[NetlinkError] = NetlinkError,
) -> Iterator[tuple[Header, bytes]]:
    """The messages answering request `seq`, read until NLMSG_DONE (a dump) or the ack.

    Messages of other sequence numbers are skipped. An NLMSG_ERROR with an errno raises
    `error(errno, strerror)`; malformed data raises `error` with EPROTO."""
    while True:
        data = sock.recv(bufsize)
        try:
            for header, body in messages(data):
                if header.seq != seq:
                    continue
                if header.type == NLMSG_DONE:
                    return
                if header.type == NLMSG_ERROR:
                    code = error_code(body)
                    if code:
                        raise error(code, os.strerror(code))
                    return  # the ack: the request is done
                yield header, body
        except MalformedError as exc:
            raise error(errno.EPROTO, f"malformed netlink answer: {exc}") from exc
