"""Slow and greedy clients against the real server: a client that dribbles its request header
or body, or sits idle, loses its connection within the configured seconds (a body too slow is
answered 408 with an audit line); connections past --max-connections are answered 503 and
closed at once, counted, and the service stays reachable once one closes."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from collections.abc import Iterator

import kubernetes.client

from agent import metrics
from agent.responder import app
from tests.support import responder as harness
from tests.support.responder import TOKEN, RunningResponder, Start

LIMIT = 1.0  # --header-timeout and --body-timeout in these tests
SLACK = 1.5  # the event loop's own rounding and a busy machine
GIVE_UP = 8.0  # how long a test client keeps going against a server that never closes


@contextlib.contextmanager
def connection(responder: RunningResponder) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", responder.port), timeout=GIVE_UP)
    try:
        yield sock
    finally:
        sock.close()


class Dribbled:
    """What a dribbling client saw: the answer, and seconds until it came and until the server
    closed the connection."""

    def __init__(self) -> None:
        self.answer = b""
        self.answered_after = GIVE_UP
        self.closed_after = GIVE_UP


def dribble(sock: socket.socket, data: bytes, every: float = 0.1) -> Dribbled:
    """Send `data` a byte every `every` seconds (then wait), reading what the server sends,
    until it closes the connection or GIVE_UP seconds."""
    started = time.monotonic()
    seen = Dribbled()
    pending = data
    while time.monotonic() - started < GIVE_UP:
        readable, _, _ = select.select([sock], [], [], every)
        if readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            if not seen.answer:
                seen.answered_after = time.monotonic() - started
            seen.answer += chunk
            continue
        if pending:
            try:
                sock.sendall(pending[:1])
            except (BrokenPipeError, ConnectionResetError):
                break
            pending = pending[1:]
    else:
        return seen
    seen.closed_after = time.monotonic() - started
    return seen


def _finding(length: int) -> bytes:
    return (
        f"POST /findings/generic HTTP/1.1\r\nHost: responder\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _slow(start_responder: Start, **settings: object) -> RunningResponder:
    return start_responder(header_timeout=LIMIT, body_timeout=LIMIT, **settings)


def test_a_client_dribbling_its_header_is_cut_off(start_responder: Start) -> None:
    responder = _slow(start_responder)
    header = _finding(2) * 3  # far more than the client can send in time, a byte at a time
    with connection(responder) as sock:
        seen = dribble(sock, header)
    assert seen.closed_after < LIMIT + SLACK, seen.closed_after
    assert seen.answer == b""  # no request was ever complete: nothing to answer


def test_an_idle_connection_is_closed(start_responder: Start) -> None:
    responder = _slow(start_responder)
    with connection(responder) as sock:
        seen = dribble(sock, b"")
    assert seen.closed_after < LIMIT + SLACK and seen.answer == b"", seen.closed_after


def test_an_idle_keep_alive_connection_is_closed_after_its_answer(start_responder: Start) -> None:
    responder = _slow(start_responder)
    with connection(responder) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: responder\r\n\r\n")
        seen = dribble(sock, b"")
    assert seen.answer.startswith(b"HTTP/1.1 200 ") and seen.answer.endswith(b"ok\n")
    assert seen.closed_after < LIMIT + SLACK, seen.closed_after


def test_a_client_dribbling_its_body_is_answered_408_and_cut_off(
    core: kubernetes.client.CoreV1Api, start_responder: Start
) -> None:
    responder = _slow(start_responder)
    body = json.dumps(harness.load("generic_critical")).encode()
    with harness.audit() as audit, connection(responder) as sock:
        sock.sendall(_finding(len(body)))
        seen = dribble(sock, body)
        lines = audit.decisions()
    assert seen.answer.startswith(b"HTTP/1.1 408 "), seen.answer[:300]
    head, _, text = seen.answer.partition(b"\r\n\r\n")
    assert b"Connection: close" in head
    assert json.loads(text)["outcome"] == "timeout"
    assert seen.answered_after < LIMIT + SLACK, seen.answered_after
    # aiohttp reads on for LINGERING_SECONDS (so a client that is still sending sees the
    # answer, not a reset), then closes whatever the client does.
    assert seen.closed_after < LIMIT + app.LINGERING_SECONDS + SLACK, seen.closed_after
    assert [(line["status"], line["outcome"]) for line in lines] == [(408, "timeout")]


def _refused() -> float:
    value = metrics.RESPONDER_REGISTRY.get_sample_value(
        "podseg_responder_connections_refused_total"
    )
    return value or 0.0


def test_connections_past_the_cap_are_answered_503_and_closed(start_responder: Start) -> None:
    responder = start_responder(max_connections=3, header_timeout=30.0)
    before = _refused()
    held = [socket.create_connection(("127.0.0.1", responder.port)) for _ in range(3)]
    try:
        # The three are open (an answer on each proves the server has them).
        for sock in held:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: responder\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        assert responder.responder.connections.open == 3
        with connection(responder) as extra:
            seen = dribble(extra, b"")
        assert seen.answer.startswith(b"HTTP/1.1 503 "), seen.answer
        assert b'"outcome": "busy"' in seen.answer and seen.closed_after < SLACK
        assert _refused() == before + 1
        value = metrics.RESPONDER_REGISTRY.get_sample_value("podseg_responder_connections")
        assert value is not None and value >= 3
    finally:
        held.pop().close()
    # One closed: the next client is served.
    deadline = time.monotonic() + GIVE_UP
    while responder.responder.connections.open >= 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    status, _, text = responder.request("GET", "/healthz")
    assert status == 200 and text == b"ok\n"
    for sock in held:
        sock.close()
