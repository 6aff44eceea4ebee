"""The worker protocol's wire form (`agent.dataplane.protocol`): every request and reply reads
back as it was sent, odd payloads included; a line that does not read, or of another version,
is a ProtocolError naming what is wrong, never a wrong value. No root."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from agent.dataplane import netns, protocol

BIG = (1 << 128) - 1  # the highest IPv6 address as an integer: beyond 64 bits
ODD = 'add rule inet podseg c ip saddr 198.18.0.1 comment "a \\"quoted\\" é\n\\u2028 \x00"\n'
ENTRY = protocol.ConntrackEntry(10, "fd00:198:18::1", "fd00:198:18::2", 6, 1, 65535, 3, "ab01")
SAMPLES: list[protocol.Request[Any]] = [
    protocol.Scan("/run/netns", proc=False, paths=("/run/netns/psg-a", "/proc/1/ns/net")),
    protocol.Apply("/run/netns/psg-a", None, ODD),
    protocol.Commit("/run/netns/psg-a", 4026531840, ""),
    protocol.Patch(
        "/run/netns/psg-a",
        7,
        ODD,
        (1 << 32) - 1,
        (
            protocol.SetChange("ingress_tcp_8080_v6", 6, "any", ((BIG - 1, BIG),), ()),
            protocol.SetChange("egress_ports4", 4, "ports", (), ((1, 2, 6, 0, 65535),)),
        ),
        "3d7cd7c9b7378783",
    ),
    protocol.ReadGeneration("/run/netns/psg-a", 1),
    protocol.Inspect("/run/netns/psg-a", 1),
    protocol.Glance("/run/netns/psg-a", None),
    protocol.Snapshot("/run/netns/psg-a", 1),
    protocol.ReadComment("/run/netns/psg-a", 1),
    protocol.ListOwned("/run/netns/psg-a", 1),
    protocol.Forget(None),
    protocol.ReadCounters(
        (protocol.CounterTarget("ns/pod", "/run/netns/psg-a", None),), "iptables"
    ),
    protocol.ConntrackList("/run/netns/psg-a", 1),
    protocol.ConntrackDelete("/run/netns/psg-a", 1, (ENTRY,)),
    protocol.ConntrackMark("/run/netns/psg-a", 1, (dataclasses.replace(ENTRY, ct_id=9),), 1 << 31),
    protocol.IptApply("/run/netns/psg-a", 1, protocol.IptProgram(ODD, "*filter\n", "", "")),
    protocol.IptInspect("/run/netns/psg-a", 1),
    protocol.IptComment("/run/netns/psg-a", 1),
    protocol.IptDelete("/run/netns/psg-a", 1),
    protocol.IptPatch("/run/netns/psg-a", 1, ODD, "g1", "d" * 32, {"s1": 0, "é": 5}),
    protocol.Batch((protocol.Ping(), protocol.Batch((protocol.Forget((1, 2)),)))),
    protocol.Ping(),
]
REPLIES: list[tuple[protocol.Request[Any], Any]] = [
    (
        protocol.Scan("/run/netns"),
        protocol.Scanned(
            (
                netns.Candidate(
                    "/run/netns/psg-a",
                    5,
                    (netns.Interface("eth0", ("198.18.0.2", "fe80::1")),),
                    (netns.Route("0.0.0.0/0", "198.18.0.1", "eth0"),),
                ),
            ),
            ("198.18.0.1",),
        ),
    ),
    (SAMPLES[2], protocol.Committed(None, 12, 0.25, None)),
    (SAMPLES[3], protocol.Patched(True, 13, True, 0.001, "d" * 32)),
    (SAMPLES[5], protocol.Examined("fp", None, None, ("inet filter output",))),
    (SAMPLES[7], protocol.Held(ODD, "d", 3, None)),
    (SAMPLES[8], protocol.Comment(None)),
    (SAMPLES[9], protocol.Tables(("inet podseg",), ())),
    (SAMPLES[11], protocol.Counters({"ns/pod": {"deny_in": 1 << 40}})),
    (SAMPLES[12], protocol.ConntrackEntries((ENTRY,))),
    (SAMPLES[13], protocol.Count(0)),
    (SAMPLES[18], protocol.Removed(False)),
    (SAMPLES[-1], protocol.Pong(1, 2)),
]


def test_every_op_has_a_sample() -> None:
    assert {type(r) for r in SAMPLES} == set(protocol.REQUESTS.values())


@pytest.mark.parametrize("request_", SAMPLES, ids=lambda r: r.op.value)
def test_every_request_reads_back_as_sent(request_: protocol.Request[Any]) -> None:
    line = protocol.request_line(41, request_)
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one line, whatever the payload
    ident, read = protocol.read_request(line)
    assert ident == 41
    if isinstance(request_, protocol.Batch):
        assert read == list(request_.requests)
    else:
        assert read == request_
    assert protocol.decode_request(protocol.encode_request(request_)) == request_


@pytest.mark.parametrize(("request_", "reply"), REPLIES, ids=lambda r: type(r).__name__)
def test_every_reply_reads_back_as_sent(request_: protocol.Request[Any], reply: Any) -> None:
    assert protocol.read_reply(request_, 3, protocol.reply_line(3, reply)) == reply


def test_a_batch_reply_holds_each_parts_reply_or_typed_error_in_order() -> None:
    batch = protocol.Batch((SAMPLES[2], SAMPLES[3], protocol.Ping()))
    outcomes = (
        protocol.NetnsGone("gone: é"),
        protocol.Patched(False, 4, False),
        protocol.Pong(1, 0),
    )
    got = protocol.read_reply(batch, 9, protocol.reply_line(9, protocol.BatchReplies(outcomes)))
    assert isinstance(got, protocol.BatchReplies)
    gone, patched, pong = got.replies
    assert type(gone) is protocol.NetnsGone and str(gone) == "gone: é"
    assert (patched, pong) == outcomes[1:]
    short = protocol.reply_line(9, protocol.BatchReplies(outcomes[:2]))
    assert "does not answer every request" in str(protocol.read_reply(batch, 9, short))


@pytest.mark.parametrize(
    ("line", "ident", "says"),
    [
        (b"", 0, "unreadable line"),
        (b"\xff\xfe garbage\n", 0, "unreadable line"),
        (b'[2, 5, "patch", {"path": "/x", "ino"', 0, "unreadable line"),  # cut short
        (b'{"id": 5, "op": "ping"}\n', 0, "unreadable line"),  # the JSON dicts of before
        (b'[1, 5, "ping", {}]\n', 5, "protocol version 1, this side speaks 2"),
        (b'[3, "x"]\n', 0, "protocol version 3, this side speaks 2"),
        (b'[2, 5, "no-such-op", {}]\n', 5, "unknown op 'no-such-op'"),
        (b'[2, 5, "generation", {"path": 7, "ino": null}]\n', 5, "malformed generation request"),
        (b'[2, 5, "generation", {"ino": null}]\n', 5, "missing required field `path`"),
        (b'[2, 5, "batch", {"requests": []}]\n', 5, "malformed batch request"),
    ],
)
def test_a_line_that_does_not_read_is_a_protocol_error_saying_why(
    line: bytes, ident: int, says: str
) -> None:
    with pytest.raises(protocol.Unreadable, match=says) as caught:
        protocol.read_request(line)
    assert caught.value.ident == ident
    assert isinstance(caught.value, protocol.ProtocolError)
    # The answer names the request when it can, and reads on the agent's side as that error.
    answer = protocol.read_reply(protocol.Ping(), ident, protocol.reply_line(ident, caught.value))
    assert type(answer) is protocol.ProtocolError and says in str(answer)


def test_one_unreadable_part_of_a_batch_fails_alone() -> None:
    line = (
        b'[2, 8, "batch", [["ping", {}], ["generation", {"path": 1}], ["forget", {"inos": []}]]]\n'
    )
    ident, parts = protocol.read_request(line)
    assert ident == 8 and isinstance(parts, list)
    assert parts[0] == protocol.Ping() and parts[2] == protocol.Forget(())
    assert isinstance(parts[1], protocol.ProtocolError)
    assert "malformed generation request" in str(parts[1])


def test_a_reply_the_agent_cannot_trust_is_a_protocol_error() -> None:
    ping = protocol.Ping()
    with pytest.raises(protocol.ProtocolError, match="unreadable line"):
        protocol.read_reply(ping, 4, b'{"id": 4, "ok": true, "pid": 1, "contexts": 0}\n')
    with pytest.raises(protocol.ProtocolError, match="protocol version 1"):
        protocol.read_reply(ping, 4, b'[1, 4, "", {"pid": 1, "contexts": 0}]\n')
    with pytest.raises(protocol.ProtocolError, match="answers request 3, not 4"):
        protocol.read_reply(ping, 4, protocol.reply_line(3, protocol.Pong(1, 0)))
    # A reply whose body does not fit its type fails that request alone, as a typed error.
    wrong = protocol.read_reply(ping, 4, b'[2, 4, "", {"pid": "one", "contexts": 0}]\n')
    assert type(wrong) is protocol.DataplaneError and "malformed ping reply" in str(wrong)
    unknown = protocol.read_reply(ping, 4, b'[2, 4, "no-such-kind", "odd"]\n')
    assert type(unknown) is protocol.DataplaneError and str(unknown) == "odd"
