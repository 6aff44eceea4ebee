"""The agent's side of the helper process (`agent.helper`): starts it, routes each of its output
lines to the part it names, and restarts the whole helper when it exits.

Why one link for two users: the drop capture (`agent.flows.collector`) and the change
notifications (`agent.sync.tamper`) each talk to their own part of the same process. When that
process dies, for whichever part's fault, both have lost their sockets; the link restarts it
after `RESTART_DELAY`, logs `helper_exited` (with the part that failed, when one did), counts
`podseg_helper_restarts_total`, and tells every part it is connected again, so each reopens
what it watches (and the change watcher reads back every namespace it watched: commits made
while nobody listened went unseen).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from agent import child, helper, metrics
from agent.dataplane import listener
from agent.dataplane.nft import render as render_nft

log = structlog.get_logger(__name__)

RESTART_DELAY = 1.0
LINE_LIMIT = 16 * 1024 * 1024  # the longest output line read (a burst of drops)
UNNAMED = "process"  # the restart label when the helper died without naming a part

Send = Callable[[listener.Open | listener.Close], None]


class Part(Protocol):
    """What uses one part of the helper."""

    def attach(self, send: Send) -> None:
        """From now on, requests to the part go through `send`."""

    def connected(self, restarted: bool) -> None:
        """The helper (re)started: the part has no socket open; reopen what is watched."""

    def handle(self, message: dict[str, Any]) -> None:
        """One output line of the part."""


class Link:
    def __init__(self) -> None:
        self.parts: dict[str, Part] = {}
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None

    def add(self, name: str, part: Part) -> None:
        """Route the part `name` of the helper to `part` (before `start`)."""
        self.parts[name] = part
        part.attach(functools.partial(self.send, name))

    def send(self, name: str, request: listener.Open | listener.Close) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            return  # not running: the part reopens what it watches when it is connected
        proc.stdin.write(listener.encode(request, name).encode())

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def start(self) -> None:
        """Start the helper, and keep it running until `close`."""
        if self.parts and self._task is None:
            self._proc = await self._spawn(restarted=False)
            self._task = asyncio.create_task(self._run(self._proc), name="helper")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        proc, self._proc = self._proc, None
        await child.stop(proc)

    async def _spawn(self, restarted: bool) -> asyncio.subprocess.Process:
        group = {helper.NFLOG_GROUP_ENV: str(render_nft.NFLOG_GROUP)}  # the deny rules' group
        proc = await child.spawn("agent.helper", child.HELPER_PARENT_ENV, LINE_LIMIT, group)
        self._proc = proc
        for part in self.parts.values():
            part.connected(restarted)
        return proc

    async def _run(self, proc: asyncio.subprocess.Process) -> None:
        while True:
            failed = await self._read(proc)
            code = await proc.wait()
            self.restarts += 1
            metrics.HELPER_RESTARTS.labels(failed or UNNAMED).inc()
            log.warning(
                "helper_exited",
                returncode=code,
                failed_part=failed,
                restart_in_s=RESTART_DELAY,
                restarts=self.restarts,
            )
            await asyncio.sleep(RESTART_DELAY)
            proc = await self._spawn(restarted=True)

    async def _read(self, proc: asyncio.subprocess.Process) -> str | None:
        """Route the helper's lines until it closes its stdout; the part it said failed."""
        assert proc.stdout is not None
        failed = None
        while raw := await proc.stdout.readline():
            try:
                message = json.loads(raw)
                name = str(message.pop("part", ""))
                if "failed" in message:
                    failed = name if name in self.parts else None
                    log.error("helper_part_failed", part=name, error=message["failed"])
                elif name in self.parts:
                    self.parts[name].handle(message)
                else:
                    log.warning("helper_line_without_part", line=message)
            except Exception as exc:  # one odd line must not stop both parts
                log.warning("helper_bad_line", error=f"{type(exc).__name__}: {exc}")
        return failed
