"""The netlink codec (`agent.dataplane.netlink`) without a kernel: headers and attributes round
trip, a datagram's messages are walked with their padding, errors become errno, and data cut
short or lying about its length raises instead of being misread."""

from __future__ import annotations

import errno
import struct

import pytest

from agent.dataplane import netlink

DUMP = netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP


class FakeSocket:
    """Hands out the given datagrams one `recv` at a time; records what was sent."""

    def __init__(self, *datagrams: bytes) -> None:
        self.datagrams = list(datagrams)
        self.sent: list[bytes] = []
        self.sizes: list[int] = []

    def send(self, data: bytes, /) -> int:
        self.sent.append(data)
        return len(data)

    def recv(self, bufsize: int, /) -> bytes:
        self.sizes.append(bufsize)
        return self.datagrams.pop(0)


def _batch(*messages: bytes) -> bytes:
    """Messages in one datagram, each padded to the alignment as the kernel does."""
    return b"".join(m + b"\0" * (netlink.align(len(m)) - len(m)) for m in messages)


def _error(seq: int, code: int) -> bytes:
    """An NLMSG_ERROR answer to `seq` (code 0: an ack), carrying the request's header."""
    request = netlink.HEADER.pack(16, 99, netlink.NLM_F_REQUEST, seq, 0)
    return netlink.message(netlink.NLMSG_ERROR, 0, seq, struct.pack("=i", -code) + request)


def test_header_round_trip() -> None:
    data = netlink.message(0x0401, DUMP, 77, b"abcde", pid=9)
    assert len(data) == 16 + 5 and data[:4] == struct.pack("=I", 21)
    header = netlink.unpack_header(data)
    assert header == netlink.Header(21, 0x0401, DUMP, 77, 9)
    assert (header.type, header.flags, header.seq) == (0x0401, 0x301, 77)
    assert netlink.unpack_header(b"\0" * 4 + data, 4) == header
    assert netlink.nfnl_type(1, 2) == 0x0102
    assert netlink.nfgen(10, 2100) == bytes([10, 0]) + struct.pack("!H", 2100)


def test_attributes_round_trip_with_padding_and_flags() -> None:
    one = netlink.attr(3, b"eth0\0")
    assert one == struct.pack("=HH", 9, 3) + b"eth0\0" + b"\0" * 3  # length excludes padding
    assert len(netlink.attr(1, b"")) == 4 and len(netlink.attr(1, b"1234")) == 8
    inner = netlink.attr(1, bytes([198, 18, 0, 1])) + netlink.attr(2, b"\x06")
    outer = netlink.nested(1, inner) + netlink.attr(8 | netlink.NLA_F_NET_BYTEORDER, b"\0\0\0\1")
    assert struct.unpack_from("=H", outer, 2)[0] == 1 | netlink.NLA_F_NESTED
    parsed = netlink.attrs(outer)
    assert parsed == {1: inner, 8: b"\0\0\0\1"}  # both flags masked off the type
    assert netlink.attrs(parsed[1]) == {1: bytes([198, 18, 0, 1]), 2: b"\x06"}
    assert list(netlink.iter_attrs(b"\xff" * 4 + one, 4)) == [(3, b"eth0\0")]
    # a repeated type keeps the last; bytes too few for a header are padding
    assert netlink.attrs(netlink.attr(5, b"a") + netlink.attr(5, b"b") + b"\0\0") == {5: b"b"}
    assert netlink.attrs(b"") == {}


def test_attributes_cut_short_or_lying_raise() -> None:
    good = netlink.attr(1, b"abcdef") + netlink.attr(2, b"xy")  # lengths 10 and 6, at 0 and 12
    first = {1: b"abcdef"}
    for n in range(len(good)):
        if n < 4:  # not even a header: nothing
            assert netlink.attrs(good[:n]) == {}
        elif n < 10 or 16 <= n < 18:  # a header whose attribute runs past the end
            with pytest.raises(netlink.TruncatedError):
                netlink.attrs(good[:n])
        elif n < 16:  # the first whole, then padding or too few bytes for a header
            assert netlink.attrs(good[:n]) == first
        else:  # the second's padding is missing, which is no fault
            assert netlink.attrs(good[:n]) == {**first, 2: b"xy"}
    with pytest.raises(netlink.MalformedError) as raised:
        netlink.attrs(struct.pack("=HH", 3, 1) + b"\0" * 8)  # shorter than its own header
    assert not isinstance(raised.value, netlink.TruncatedError)


def test_messages_walk_a_batch_and_stop_at_a_fault() -> None:
    first = netlink.message(16, netlink.NLM_F_MULTI, 1, b"\1\2\3")  # padded to 20 in a batch
    second = netlink.message(20, netlink.NLM_F_MULTI, 1, b"\4" * 8)
    batch = first + b"\0" + second
    assert list(netlink.messages(batch)) == [
        (netlink.Header(19, 16, 2, 1, 0), b"\1\2\3"),
        (netlink.Header(24, 20, 2, 1, 0), b"\4" * 8),
    ]
    assert list(netlink.messages(b"")) == []
    assert list(netlink.messages(first)) == [(netlink.Header(19, 16, 2, 1, 0), b"\1\2\3")]
    seen: list[int] = []
    with pytest.raises(netlink.TruncatedError):
        for header, _ in netlink.messages(batch + second[:10]):  # a header cut short
            seen.append(header.type)
    assert seen == [16, 20]  # the whole messages before the fault still come out
    with pytest.raises(netlink.TruncatedError):
        list(netlink.messages(batch[:-1]))  # the last message runs past the datagram
    lying = struct.pack("=IHHII", 8, 16, 0, 1, 0)
    with pytest.raises(netlink.MalformedError) as raised:
        list(netlink.messages(lying))
    assert not isinstance(raised.value, netlink.TruncatedError)


def test_error_messages_carry_the_errno() -> None:
    header, body = next(netlink.messages(_error(5, errno.ENOENT)))
    assert header.type == netlink.NLMSG_ERROR and header.seq == 5
    assert netlink.error_code(body) == errno.ENOENT
    assert netlink.error_code(next(netlink.messages(_error(5, 0)))[1]) == 0
    with pytest.raises(netlink.TruncatedError):
        netlink.error_code(b"\0\0")


def test_responses_read_a_dump_until_done_across_datagrams() -> None:
    one = netlink.message(16, netlink.NLM_F_MULTI, 3, b"a")
    two = netlink.message(16, netlink.NLM_F_MULTI, 3, b"b")
    stray = netlink.message(16, 0, 2, b"old")  # an answer to an earlier request
    done = netlink.message(netlink.NLMSG_DONE, netlink.NLM_F_MULTI, 3, b"\0" * 4)
    after = netlink.message(16, 0, 3, b"never read")
    sock = FakeSocket(_batch(one, stray), _batch(two, done, after), b"unread")
    got = [(h.type, body) for h, body in netlink.responses(sock, 3, bufsize=1 << 20)]
    assert got == [(16, b"a"), (16, b"b")]
    assert sock.sizes == [1 << 20, 1 << 20] and sock.datagrams == [b"unread"]


def test_responses_end_at_the_ack_and_raise_the_error() -> None:
    sock = FakeSocket(_error(4, 0), b"unread")
    assert list(netlink.responses(sock, 4)) == [] and sock.datagrams == [b"unread"]

    class Refused(netlink.NetlinkError):
        pass

    sock = FakeSocket(_batch(netlink.message(16, 0, 7, b"x"), _error(7, errno.EBUSY)))
    replies = netlink.responses(sock, 7, error=Refused)
    assert next(replies)[1] == b"x"
    with pytest.raises(Refused) as raised:
        next(replies)
    assert raised.value.errno == errno.EBUSY and "busy" in str(raised.value).lower()
    assert isinstance(raised.value, OSError)


def test_responses_report_malformed_answers_as_netlink_errors() -> None:
    sock = FakeSocket(netlink.message(16, 0, 1, b"abcd")[:-2])
    with pytest.raises(netlink.NetlinkError) as raised:
        list(netlink.responses(sock, 1))
    assert raised.value.errno == errno.EPROTO
    assert isinstance(raised.value.__cause__, netlink.TruncatedError)
    short_error = netlink.message(netlink.NLMSG_ERROR, 0, 1, b"\0")
    with pytest.raises(netlink.NetlinkError):
        list(netlink.responses(FakeSocket(short_error), 1))
