"""Per-client token buckets, pure with a fake clock: a burst, then one request per 1/rate
seconds; clients are independent; the table stays bounded; refusals are logged at most once a
second per client, with the count of those not logged."""

from __future__ import annotations

import pytest

from agent.responder import ratelimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate() -> None:
    clock = Clock()
    buckets = ratelimit.TokenBuckets(2.0, 3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [None, None, None]
    refusal = buckets.take("a")
    assert refusal is not None and refusal.retry_after == pytest.approx(0.5)
    clock.now += 0.25
    refusal = buckets.take("a")
    assert refusal is not None and refusal.retry_after == pytest.approx(0.25)
    clock.now += 0.25
    assert buckets.take("a") is None  # one token back after 1/rate seconds
    assert buckets.take("a") is not None
    clock.now += 60
    assert [buckets.take("a") for _ in range(3)] == [None, None, None]  # refilled to the burst
    assert buckets.take("a") is not None


def test_clients_are_independent() -> None:
    buckets = ratelimit.TokenBuckets(1.0, 1, clock=Clock())
    assert buckets.take("10.0.0.1") is None
    assert buckets.take("10.0.0.1") is not None
    assert buckets.take("10.0.0.2") is None


def test_rate_zero_is_no_limit() -> None:
    buckets = ratelimit.TokenBuckets(0.0, 1, clock=Clock())
    assert all(buckets.take("a") is None for _ in range(1000))
    assert len(buckets) == 0


def test_the_table_is_bounded_and_forgets_the_least_recent_client() -> None:
    buckets = ratelimit.TokenBuckets(1.0, 1, max_clients=100, clock=Clock())
    for n in range(1000):
        buckets.take(f"client-{n}")
    assert len(buckets) == 100
    assert buckets.take("client-999") is not None  # still known: limited
    assert buckets.take("client-0") is None  # forgotten: a fresh bucket


def test_refusals_are_logged_once_a_second_with_the_count_not_logged() -> None:
    clock = Clock()
    buckets = ratelimit.TokenBuckets(0.001, 1, clock=clock)
    assert buckets.take("a") is None
    refusals = [buckets.take("a") for _ in range(5)]
    assert [(r.log, r.unlogged) for r in refusals if r] == [
        (True, 0),
        (False, 1),
        (False, 2),
        (False, 3),
        (False, 4),
    ]
    clock.now += ratelimit.LOG_INTERVAL
    refusal = buckets.take("a")
    assert refusal is not None and (refusal.log, refusal.unlogged) == (True, 4)
