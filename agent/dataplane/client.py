"""The agent's handle on the dataplane worker process: typed, time-bounded requests.

Every request has a deadline; a worker that does not answer in time is killed and restarted,
and the caller gets `WorkerTimeout`, so one wedged namespace can never stall the agent. The
worker's answers are mapped to typed errors (`NetnsGone`, `ApplyFailed`) the reconciler acts on.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from agent import child
from agent.dataplane import netns

log = structlog.get_logger(__name__)


class DataplaneError(Exception):
    """Base of every dataplane failure the reconciler handles."""


class NetnsGone(DataplaneError):
    """The pod's namespace vanished or changed under us."""


class ApplyFailed(DataplaneError):
    """nft rejected the transaction; the previous ruleset stays in place."""


class WorkerTimeout(DataplaneError):
    """The worker did not answer in time; it has been killed and will be restarted."""


# Requests per batch round trip: bounds one trip's time (a drop-counter read or another pod's
# urgent change waits at most one trip) while sparing a round trip per pod.
BATCH_SIZE = 64
PARTS_PER_TIMEOUT = 8

Reply = dict[str, Any] | DataplaneError  # one request's answer in a batch


def failure(reply: Mapping[str, Any]) -> DataplaneError:
    """The typed error of a failed worker reply."""
    kind, error = reply.get("kind"), str(reply.get("error"))
    if kind == "netns_gone":
        return NetnsGone(error)
    if kind in ("nft", "ipt"):  # nft, iptables-restore or ipset refused: nothing committed
        return ApplyFailed(error)
    return DataplaneError(error)


class WorkerClient:
    """Serialises requests to one worker process (started lazily, restarted on failure)."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self.restarts = 0

    async def _ensure(self) -> asyncio.subprocess.Process:
        if self._proc is None or self._proc.returncode is not None:
            self._proc = await child.spawn(
                "agent.dataplane.worker", child.WORKER_PARENT_ENV, limit=64 * 1024 * 1024
            )
        return self._proc

    async def start(self) -> None:
        """Start the worker now, so its start-up (an interpreter and its imports, ~0.3 s)
        overlaps the initial LISTs instead of delaying the first pass."""
        async with self._lock:
            await self._ensure()

    async def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        self.restarts += 1

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        # A batch gets the budget of its parts, counted by groups of PARTS_PER_TIMEOUT (an
        # iptables apply starts ~10 processes: 64 of them may well outlast one timeout).
        parts = len(fields.get("requests", ())) if op == "batch" else 1
        timeout = self.timeout * max(1, math.ceil(parts / PARTS_PER_TIMEOUT))
        async with self._lock:
            proc = await self._ensure()
            assert proc.stdin is not None and proc.stdout is not None
            req_id = next(self._ids)
            line = json.dumps({"id": req_id, "op": op, **fields}) + "\n"
            try:
                proc.stdin.write(line.encode())
                await asyncio.wait_for(proc.stdin.drain(), timeout)
                raw = await asyncio.wait_for(proc.stdout.readline(), timeout)
            except (TimeoutError, ConnectionError, BrokenPipeError) as exc:
                await self._kill()
                raise WorkerTimeout(f"dataplane worker did not answer {op} in time") from exc
            if not raw:
                await self._kill()
                raise WorkerTimeout(f"dataplane worker exited during {op}")
        reply: dict[str, Any] = json.loads(raw)
        if reply.get("ok"):
            return reply
        raise failure(reply)

    async def batch(self, requests: Sequence[Mapping[str, Any]]) -> list[Reply]:
        """Run several requests in as few round trips as possible (`BATCH_SIZE` per trip).

        Each answer is the reply of its request, in order, or the typed error that request
        alone met: one pod's vanished namespace never fails the others of the batch. A worker
        that does not answer in time fails the whole call (`WorkerTimeout`), as `request`.
        """
        answers: list[Reply] = []
        for start in range(0, len(requests), BATCH_SIZE):
            chunk = [dict(r) for r in requests[start : start + BATCH_SIZE]]
            reply = await self.request("batch", requests=chunk)
            for part in reply["replies"]:
                answers.append(part if part.get("ok") else failure(part))
        return answers

    async def scan(self, netns_dir: str, proc: bool = True) -> list[netns.Candidate]:
        reply = await self.request("scan", netns_dir=netns_dir, proc=proc)
        return netns.candidates_from_scan(reply["netns"])

    async def apply(self, target: netns.Target, script: str) -> str | None:
        """Commit `script` in the target namespace; return the digest of the result."""
        reply = await self.request("apply", path=target.path, ino=target.ino, script=script)
        digest = reply.get("digest")
        return str(digest) if digest else None

    async def commit(self, target: netns.Target, script: str) -> tuple[str | None, int | None]:
        """Commit `script`; return (digest of the result, namespace generation before it)."""
        return committed(
            await self.request("apply", path=target.path, ino=target.ino, script=script)
        )

    async def patch(
        self, target: netns.Target, script: str, generation: int
    ) -> tuple[bool, int | None]:
        """Commit an incremental transaction if the namespace is still at `generation`.

        Returns (vouched, new generation): vouched is False when the worker refused (someone
        else committed there) or another commit raced ours; the caller then replaces the table.
        """
        reply = await self.request(
            "patch", path=target.path, ino=target.ino, script=script, generation=generation
        )
        return bool(reply.get("applied")) and bool(reply.get("sole")), as_int(
            reply.get("generation")
        )

    async def generation(self, target: netns.Target) -> int | None:
        reply = await self.request("generation", path=target.path, ino=target.ino)
        return as_int(reply.get("generation"))

    async def inspect(self, target: netns.Target) -> tuple[str | None, str | None]:
        """(fingerprint, digest of the whole stateless listing) of the owned tables."""
        reply = await self.request("inspect", path=target.path, ino=target.ino)
        fingerprint, digest = reply.get("fingerprint"), reply.get("digest")
        return (str(fingerprint) if fingerprint else None, str(digest) if digest else None)

    async def observe(self, target: netns.Target) -> str | None:
        reply = await self.request("observe", path=target.path, ino=target.ino)
        fingerprint = reply.get("fingerprint")
        return str(fingerprint) if fingerprint else None

    async def counters(
        self, targets: dict[str, netns.Target], backend_name: str = "nftables"
    ) -> dict[str, dict[str, int]]:
        """Named deny counters (name -> packets) per key; namespaces without a table are absent.
        `backend_name` says where they live (nft named counters, or iptables rule counters)."""
        reply = await self.request(
            "counters",
            targets=[{"key": k, "path": t.path, "ino": t.ino} for k, t in targets.items()],
            backend=backend_name,
        )
        raw = reply.get("counters") or {}
        return {str(k): {str(n): int(v) for n, v in c.items()} for k, c in raw.items()}

    async def conntrack_list(self, target: netns.Target) -> list[dict[str, Any]]:
        """The conntrack entries of the target namespace (see `agent.dataplane.conntrack`)."""
        reply = await self.request("conntrack_list", path=target.path, ino=target.ino)
        return list(reply["entries"])

    async def conntrack_delete(
        self, target: netns.Target, entries: Sequence[Mapping[str, Any]]
    ) -> int:
        """Delete entries from `conntrack_list`; returns how many were still there."""
        reply = await self.request(
            "conntrack_delete", path=target.path, ino=target.ino, entries=list(entries)
        )
        return int(reply["deleted"])

    async def conntrack_mark(
        self, target: netns.Target, entries: Sequence[Mapping[str, Any]], mark: int
    ) -> int:
        """OR `mark` into the entries' conntrack marks; returns how many were still there."""
        reply = await self.request(
            "conntrack_mark", path=target.path, ino=target.ino, entries=list(entries), mark=mark
        )
        return int(reply["marked"])

    async def forget(self, inos: list[int] | None) -> None:
        await self.request("forget", inos=inos)

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        await child.stop(proc)


def examined(reply: Mapping[str, Any]) -> tuple[str | None, str | None, int | None]:
    """(fingerprint, digest, generation or None) from an inspect reply (either backend)."""
    fingerprint, digest = reply.get("fingerprint"), reply.get("digest")
    return (
        str(fingerprint) if fingerprint else None,
        str(digest) if digest else None,
        as_int(reply.get("generation")),
    )


def committed(reply: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """(digest read back, generation or None) from an apply reply (either backend)."""
    digest = reply.get("digest")
    return str(digest) if digest else None, as_int(reply.get("generation"))


def as_int(value: Any) -> int | None:
    """An integer field of a reply (generation ids), None when absent or not an integer."""
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None
