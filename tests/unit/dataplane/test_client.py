"""The agent's handle on the worker (`agent.dataplane.client.WorkerClient`) against real
processes on real pipes: the worker answers a line it cannot read and goes on; a reply the
agent cannot read restarts the worker and fails that call alone, as a ProtocolError. No root:
only pings, which enter no namespace."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from agent import child
from agent.dataplane import client as dp_client
from agent.dataplane import protocol

# A worker that answers every line with bytes that are no reply at all.
GARBLING = """
import sys
for line in sys.stdin.buffer:
    sys.stdout.buffer.write(b"\\x00}{\\n")
    sys.stdout.flush()
"""


def test_the_worker_answers_a_line_it_cannot_read_and_serves_the_next() -> None:
    async def scenario() -> None:
        client = dp_client.WorkerClient(timeout=10)
        try:
            pid = (await client.call(protocol.Ping())).pid
            proc = client._proc
            assert proc is not None and proc.stdin is not None and proc.stdout is not None
            for ident, garbled in ((0, b"\xff\xfe not a request\n"), (9, b'[1, 9, "ping", {}]\n')):
                proc.stdin.write(garbled)
                reply = protocol.read_reply(protocol.Ping(), ident, await proc.stdout.readline())
                assert isinstance(reply, protocol.ProtocolError), reply
            pong = await client.call(protocol.Ping())
            assert pong.pid == pid and client.restarts == 0
        finally:
            await client.close()

    asyncio.run(scenario())


def test_a_reply_the_agent_cannot_read_restarts_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    spawned: list[int] = []
    spawn = child.spawn

    async def first_garbles(module: str, parent_env: str, **kwargs: Any) -> Any:
        spawned.append(1)
        if len(spawned) > 1:
            return await spawn(module, parent_env, **kwargs)
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            GARBLING,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )

    monkeypatch.setattr(child, "spawn", first_garbles)

    async def scenario() -> None:
        client = dp_client.WorkerClient(timeout=10)
        try:
            with pytest.raises(protocol.ProtocolError, match="unreadable line"):
                await client.call(protocol.Ping())
            assert client.restarts == 1 and client.pid is None
            assert (await client.call(protocol.Ping())).pid > 0  # a real worker now
            assert len(spawned) == 2
        finally:
            await client.close()

    asyncio.run(scenario())
