"""The HTTP handler under random input, through the real server: whatever a sender posts, the
answer is never a 5xx, and every request is exactly one audit line whose status is the answer's.
Input that is not a finding of its source (not JSON, not an object, nested too deeply, not
UTF-8, too large, wrong types) is answered 400 (413 when too large) `malformed`."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import hypothesis
import hypothesis.strategies as st
import kubernetes.client
import pytest

from tests.support import responder as harness
from tests.support.responder import TOKEN, RunningResponder, Start

MAX_BODY = 64 * 1024
SAMPLES = {
    "falco": ["falco_drop_and_execute", "falco_host_event", "falcosidekick_reverse_shell"],
    "wiz": ["wiz_pod_critical", "wiz_container_high", "wiz_entitysnapshot_resolved", "wiz_vm"],
    "generic": ["generic_critical"],
}
FUZZ = hypothesis.settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
    database=None,
)

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["", "critical", "CRITICAL", "<NA>", "Pod", "Container", "RESOLVED"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replaced(value[path[0]], path[1:], new)
    return copy


@st.composite
def mutated_samples(draw: st.DrawFn, source: str) -> bytes:
    """A sample finding of `source` with one value (anywhere in it) replaced by random JSON."""
    sample = harness.load(draw(st.sampled_from(SAMPLES[source])))
    path = draw(st.sampled_from(list(_paths(sample))))
    return json.dumps(_replaced(sample, path, draw(JSON_VALUES))).encode()


@st.composite
def deeply_nested(draw: st.DrawFn) -> bytes:
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"output_fields":', "}")]))
    depth = draw(st.integers(min_value=2_000, max_value=MAX_BODY // len(opener) - 1))
    closed = draw(st.booleans())
    return (opener * depth + ("1" + closer * depth if closed else "")).encode()[:MAX_BODY]


@st.composite
def not_utf8(draw: st.DrawFn, source: str) -> bytes:
    """A sample with a non-ASCII character, encoded in Latin-1 or with a stray byte."""
    text = json.dumps(harness.load(SAMPLES[source][0]), ensure_ascii=False)
    at = draw(st.integers(min_value=0, max_value=len(text) - 1))
    if draw(st.booleans()):
        return (text[:at] + '"\u00e9' + text[at:]).encode("latin-1", "replace")
    stray = draw(st.sampled_from([b"\xff", b"\xc3", b"\x80", b"\xed\xa0\x80"]))
    raw = text.encode()
    return raw[:at] + stray + raw[at:]


@st.composite
def wrong_types(draw: st.DrawFn, source: str) -> bytes:
    """A sample whose string field (anywhere) became an object or a list: always malformed."""
    sample = harness.load(draw(st.sampled_from(SAMPLES[source])))
    read = {
        "falco": [("priority",), ("rule",), ("output_fields",), ("output_fields", "k8s.pod.name")],
        "wiz": [("issue",), ("issue", "severity"), ("control",), ("control", "name")],
        "generic": [("namespace",), ("pod",), ("severity",), ("reason",), ("source",)],
    }[source]
    path = draw(st.sampled_from([p for p in read if _has(sample, p)]))
    bad = draw(st.sampled_from([[], [1], {"x": 1}, True]))
    if path in (("output_fields",), ("issue",), ("control",)):
        bad = draw(st.sampled_from([[], "text", 3, True]))
    return json.dumps(_replaced(sample, path, bad)).encode()


def _has(value: Any, path: tuple[Any, ...]) -> bool:
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    return True


@pytest.fixture
def fuzzed(core: kubernetes.client.CoreV1Api, start_responder: Start) -> RunningResponder:
    """Dry run (a valid finding is answered, nothing is written), a small body limit, no rate
    limit (the fuzzing posts hundreds of requests a second)."""
    return start_responder(dry_run=True, max_body_bytes=MAX_BODY, rate_limit=0)


def _post(responder: RunningResponder, source: str, raw: bytes) -> tuple[int, dict[str, Any]]:
    """POST `raw`; the answer, checked to be one audit line with the same status, no 5xx."""
    with harness.audit() as audit:
        status, _, body = responder.request(
            "POST",
            f"/findings/{source}",
            raw,
            {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        lines = audit.decisions()
    assert status < 500, (raw[:300], status, body[:300])
    answer = json.loads(body)
    assert len(lines) == 1, (raw[:300], lines)
    assert (
        lines[0]["status"] == status
        and lines[0]["outcome"].replace("_", "-") == (answer["outcome"])
    ), (lines, answer)
    return status, answer


def _malformed(responder: RunningResponder, source: str, raw: bytes) -> None:
    status, answer = _post(responder, source, raw)
    assert (status, answer["outcome"]) in ((400, "malformed"), (413, "malformed")), (
        raw[:300],
        status,
        answer,
    )


SOURCES = sorted(SAMPLES)


@pytest.mark.parametrize("source", SOURCES)
def test_any_mutation_of_a_real_finding_is_answered_without_5xx(
    fuzzed: RunningResponder, source: str
) -> None:
    @FUZZ
    @hypothesis.given(raw=mutated_samples(source))
    def check(raw: bytes) -> None:
        _post(fuzzed, source, raw)

    check()


@pytest.mark.parametrize("source", SOURCES)
def test_any_json_value_is_answered_without_5xx(fuzzed: RunningResponder, source: str) -> None:
    @FUZZ
    @hypothesis.given(value=JSON_VALUES)
    def check(value: Any) -> None:
        status, answer = _post(fuzzed, source, json.dumps(value).encode())
        if not isinstance(value, dict) and value is not None:
            assert (status, answer["outcome"]) == (400, "malformed")

    check()


@pytest.mark.parametrize("source", SOURCES)
def test_bad_bodies_are_400_malformed_with_an_audit_line(
    fuzzed: RunningResponder, source: str
) -> None:
    @FUZZ
    @hypothesis.given(
        raw=st.one_of(
            deeply_nested(),
            not_utf8(source),
            wrong_types(source),
            st.binary(max_size=300).filter(_not_json),
            st.integers(min_value=1, max_value=MAX_BODY).map(lambda n: b" " * (MAX_BODY + n)),
        )
    )
    def check(raw: bytes) -> None:
        _malformed(fuzzed, source, raw)

    check()


def _not_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except (ValueError, RecursionError):
        return True
    return False


def test_deep_nesting_is_400_not_a_crash(fuzzed: RunningResponder) -> None:
    """JSON nested past Python's recursion limit (RecursionError inside the parser) or past the
    responder's own depth limit is malformed, with its audit line."""
    for source in SOURCES:
        _malformed(fuzzed, source, b"[" * 5000)
        _malformed(fuzzed, source, b'{"a":' * 5000 + b"1" + b"}" * 5000)


def test_a_token_that_is_not_utf8_is_401_not_a_crash(fuzzed: RunningResponder) -> None:
    with harness.audit() as audit:
        answer = fuzzed.raw(
            b"POST /findings/generic HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            b"Authorization: Bearer \xff\xfe\xed\xa0\x80\r\nConnection: close\r\n\r\n{}"
        )
        lines = audit.decisions()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert [(line["status"], line["outcome"]) for line in lines] == [(401, "unauthorized")]


def test_a_body_cut_short_or_badly_chunked_is_4xx_with_an_audit_line(
    core: kubernetes.client.CoreV1Api, start_responder: Start
) -> None:
    """A client that closes mid-body: 400 (for the audit line; nobody reads the answer). A
    chunk header that is not hexadecimal once the handler reads the body: aiohttp's parser
    stops feeding it, so the body read times out: 408."""
    responder = start_responder(body_timeout=0.5)
    head = (
        f"POST /findings/generic HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
    ).encode()
    with harness.audit() as audit:
        with socket.create_connection(("127.0.0.1", responder.port), timeout=10) as sock:
            sock.sendall(head + b"Content-Length: 100\r\n\r\n" + b'{"namespace": ')
            time.sleep(0.2)  # the handler is reading the body
        with socket.create_connection(("127.0.0.1", responder.port), timeout=10) as sock:
            sock.sendall(head + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            time.sleep(0.2)
            sock.sendall(b"zz\r\n{}\r\n0\r\n\r\n")
            answer = sock.recv(65536)
        deadline = time.monotonic() + 10
        while len(audit.decisions()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        lines = audit.decisions()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert [(line["status"], line["outcome"]) for line in lines] == [
        (400, "malformed"),
        (408, "timeout"),
    ]
    assert "incomplete or badly framed" in lines[0]["message"]
