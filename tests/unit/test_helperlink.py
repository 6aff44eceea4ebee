"""The agent's side of the helper process (`agent.helperlink`) with a real helper and recording
parts, without root: each part gets its own lines and sends its own requests; when the helper
dies (killed, or one part failed) it is restarted with a log line and the restart metric, and
every part is told so, so that each reopens what it watches."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

import pytest
import structlog

from agent import child, helper, helperlink, metrics
from agent.dataplane import listener
from agent.dataplane.nft import render as render_nft
from tests.support import helperproc, polling

MISSING = "/nonexistent/psg-helperlink-test"


class Recorder:
    """A part that opens one key whenever it is connected and keeps what it is told."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.connects: list[bool] = []
        self.lines: list[dict[str, Any]] = []
        self.send: Callable[[listener.Open | listener.Close], None] | None = None

    def attach(self, send: Callable[[listener.Open | listener.Close], None]) -> None:
        self.send = send

    def connected(self, restarted: bool) -> None:
        assert self.send is not None
        self.connects.append(restarted)
        self.send(listener.Open(self.key, MISSING, 1))

    def handle(self, message: dict[str, Any]) -> None:
        self.lines.append(message)


def restarts(failed: str) -> float:
    return (
        metrics.REGISTRY.get_sample_value("podseg_helper_restarts_total", {"failed": failed}) or 0.0
    )


def linked() -> tuple[helperlink.Link, Recorder, Recorder]:
    link = helperlink.Link()
    drops, changes = Recorder("x/drops"), Recorder("x/changes")
    link.add(helper.DROPS, drops)
    link.add(helper.CHANGES, changes)
    return link, drops, changes


def test_each_part_gets_its_lines_and_a_killed_helper_is_restarted_for_both() -> None:
    async def scenario() -> list[MutableMapping[str, Any]]:
        link, drops, changes = linked()
        before = restarts("process")
        with structlog.testing.capture_logs() as logs:
            await link.start()
            try:
                await polling.until(lambda: drops.lines and changes.lines, "both answered")
                assert [m["key"] for m in drops.lines] == ["x/drops"]
                assert [m["key"] for m in changes.lines] == ["x/changes"]
                first = link.pid
                assert first is not None
                os.kill(first, signal.SIGKILL)
                await polling.until(
                    lambda: len(drops.lines) == 2 and len(changes.lines) == 2, "again"
                )
                assert link.pid not in (None, first)
                assert drops.connects == changes.connects == [False, True]
                assert restarts("process") == before + 1
            finally:
                await link.close()
        return logs

    exited = [e for e in asyncio.run(scenario()) if e["event"] == "helper_exited"]
    assert len(exited) == 1 and exited[0]["returncode"] == -signal.SIGKILL
    assert exited[0]["failed_part"] is None


def test_a_failing_part_restarts_the_helper_for_both_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken_spawn(
        module: str, parent_env: str, limit: int, extra_env: dict[str, str]
    ) -> Any:
        assert module == "agent.helper" and parent_env == child.HELPER_PARENT_ENV
        # the agent names the group its deny rules log to
        assert extra_env == {helper.NFLOG_GROUP_ENV: str(render_nft.NFLOG_GROUP)}
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            helperproc.BROKEN_CHANGES,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=limit,
            env={**os.environ, **extra_env},
        )

    monkeypatch.setattr(child, "spawn", broken_spawn)

    async def scenario() -> list[MutableMapping[str, Any]]:
        link, drops, changes = linked()
        before = restarts("changes")
        with structlog.testing.capture_logs() as logs:
            await link.start()
            try:
                await polling.until(
                    lambda: drops.connects[:2] == [False, True], "restarted after a failure"
                )
                assert changes.connects[:2] == [False, True]
                assert restarts("changes") >= before + 1
            finally:
                await link.close()
        return logs

    logs = asyncio.run(scenario())
    failed = [e for e in logs if e["event"] == "helper_part_failed"]
    assert failed and failed[0]["part"] == "changes" and "broken on purpose" in failed[0]["error"]
    exited = [e for e in logs if e["event"] == "helper_exited"]
    assert exited and exited[0]["returncode"] == 1 and exited[0]["failed_part"] == "changes"
