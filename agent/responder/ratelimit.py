"""Per-client token buckets for the webhooks: each client address may send `rate` requests a
second on average, `burst` at once. Pure: the clock is passed in.

Keyed by the client's address, not by the bearer token: every sender shares the one token, so
a bucket per token would be one bucket for all, which a flood of requests without the token
would drain for everybody. The table holds at most `max_clients` addresses; past that the one
seen least recently is forgotten (its bucket had the longest time to refill, so forgetting it
gives back little). A refused client's refusals are logged at most once a second each
(`Refusal.log`), with the count of those not logged since, so a flood cannot flood the log.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from collections.abc import Callable

LOG_INTERVAL = 1.0  # seconds between two logged refusals of one client


@dataclasses.dataclass
class _Bucket:
    tokens: float
    stamp: float
    logged_at: float = -math.inf
    unlogged: int = 0


@dataclasses.dataclass(frozen=True)
class Refusal:
    retry_after: float  # seconds until the client has a token again
    log: bool  # log this refusal (the first one of this client for LOG_INTERVAL)
    unlogged: int  # refusals of this client not logged since the last logged one


class TokenBuckets:
    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`rate` 0 means no limit."""
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: collections.OrderedDict[str, _Bucket] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> Refusal | None:
        """None when `client` may go on (a token taken), else why not and for how long."""
        if self.rate <= 0:
            return None
        now = self.clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = _Bucket(float(self.burst), now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
            elapsed = max(0.0, now - bucket.stamp)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        retry_after = (1.0 - bucket.tokens) / self.rate
        if now - bucket.logged_at >= LOG_INTERVAL:
            refusal = Refusal(retry_after, log=True, unlogged=bucket.unlogged)
            bucket.logged_at, bucket.unlogged = now, 0
            return refusal
        bucket.unlogged += 1
        return Refusal(retry_after, log=False, unlogged=bucket.unlogged)
