"""The agent's handle on the dataplane worker process: typed, time-bounded requests.

Every request has a deadline; a worker that does not answer in time is killed and restarted,
and the caller gets `protocol.WorkerTimeout`, so one wedged namespace can never stall the
agent. Requests and replies are the typed values of `agent.dataplane.protocol`; this module
only sends their lines on the worker's stdin and reads the replies from its stdout.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Sequence
from typing import Any, TypeVar

import structlog

from agent import child
from agent.dataplane import netns, protocol

log = structlog.get_logger(__name__)

R = TypeVar("R")

# Requests per batch round trip: bounds one trip's time (a drop-counter read or another pod's
# urgent change waits at most one trip) while sparing a round trip per pod.
BATCH_SIZE = 64
PARTS_PER_TIMEOUT = 8
WORKER_MODULE = "agent.dataplane.worker"


class WorkerClient:
    """Serialises requests to one worker process (started lazily, restarted on failure).
    Implements `protocol.Dataplane`."""

    def __init__(self, timeout: float = 10.0, threads: int | None = None) -> None:
        self.timeout = timeout
        # The worker's threads for the parts of a batch (None: its default, or the
        # environment's PODSEG_DATAPLANE_THREADS).
        self.threads = threads
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self.restarts = 0

    async def _ensure(self) -> asyncio.subprocess.Process:
        if self._proc is None or self._proc.returncode is not None:
            extra = {protocol.THREADS_ENV: str(self.threads)} if self.threads is not None else None
            self._proc = await child.spawn(
                WORKER_MODULE, child.WORKER_PARENT_ENV, limit=64 * 1024 * 1024, extra_env=extra
            )
        return self._proc

    async def start(self) -> None:
        """Start the worker now, so its start-up (an interpreter and its imports, ~0.3 s)
        overlaps the initial LISTs instead of delaying the first pass."""
        async with self._lock:
            await self._ensure()

    @property
    def pid(self) -> int | None:
        """The worker's pid while it runs (tests and benchmarks look at its memory)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        self.restarts += 1

    async def _round_trip(
        self, request: protocol.Request[R], parts: int
    ) -> R | protocol.DataplaneError:
        """Send one request line and read its reply line (a batch gets the budget of its
        parts, counted by groups of PARTS_PER_TIMEOUT: an iptables apply starts ~10
        processes, 64 of them may well outlast one timeout); its typed reply or the error it
        reports. A reply that does not read restarts the worker (ProtocolError)."""
        timeout = self.timeout * max(1, math.ceil(parts / PARTS_PER_TIMEOUT))
        op = request.op.value
        # Encoded before waiting for the worker: a pass's next chunk is ready to go while the
        # worker still commits the one before (megabytes of scripts at a cold start).
        ident = next(self._ids)
        line = protocol.request_line(ident, request)
        async with self._lock:
            proc = await self._ensure()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                # One deadline for the write and the reply (`asyncio.timeout`, no task per
                # await as with `wait_for`): the reply's time includes the write's.
                async with asyncio.timeout(timeout):
                    proc.stdin.write(line)
                    await proc.stdin.drain()
                    raw = await proc.stdout.readline()
            except (TimeoutError, ConnectionError, BrokenPipeError) as exc:
                await self._kill()
                raise protocol.WorkerTimeout(
                    f"dataplane worker did not answer {op} in time"
                ) from exc
            if not raw:
                await self._kill()
                raise protocol.WorkerTimeout(f"dataplane worker exited during {op}")
            try:
                return protocol.read_reply(request, ident, raw)
            except protocol.ProtocolError:
                await self._kill()
                raise

    async def call(self, request: protocol.Request[R]) -> R:
        """One request; its typed reply, or the typed error it met (raised)."""
        reply = await self._round_trip(request, 1)
        if isinstance(reply, protocol.DataplaneError):
            raise reply
        return reply

    async def batch(
        self, requests: Sequence[protocol.Request[R]]
    ) -> list[R | protocol.DataplaneError]:
        """Several requests in as few round trips as possible (`BATCH_SIZE` per trip).

        Each answer is the reply of its request, in order, or the typed error that request
        alone met: one pod's vanished namespace never fails the others of the batch. A worker
        that does not answer in time fails the whole call (`WorkerTimeout`), as `call`.
        """
        answers: list[R | protocol.DataplaneError] = []
        for start in range(0, len(requests), BATCH_SIZE):
            chunk = tuple(requests[start : start + BATCH_SIZE])
            request = protocol.Batch(chunk)
            replies = await self.call_batch(request)
            answers.extend(replies)
        return answers

    async def call_batch(self, request: protocol.Batch) -> list[Any]:
        reply = await self._round_trip(request, len(request.requests))
        if isinstance(reply, protocol.DataplaneError):
            raise reply
        return list(reply.replies)

    # -- conveniences over `call` ---------------------------------------------------------
    async def scan(self, netns_dir: str, proc: bool = True) -> list[netns.Candidate]:
        return list((await self.call(protocol.Scan(netns_dir, proc))).candidates)

    async def forget(self, inos: Sequence[int] | None) -> None:
        await self.call(protocol.Forget(tuple(inos) if inos is not None else None))

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        await child.stop(proc)
