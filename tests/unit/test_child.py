"""The dataplane worker never outlives its agent (it could go on applying stale requests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.support.polling import wait_for

# The parent also hands the write end of the worker's stdin to a long sleeper, so the worker
# sees no EOF when the parent dies: only the parent-death signal can end it.
PARENT = """
import asyncio, subprocess, sys
from agent.dataplane import client as dp_client, protocol

async def main():
    client = dp_client.WorkerClient()
    pid = (await client.call(protocol.Ping())).pid
    fd = client._proc.stdin.transport.get_extra_info("pipe").fileno()
    holder = subprocess.Popen(["sleep", "30"], pass_fds=[fd])
    print(pid, holder.pid, flush=True)
    await asyncio.to_thread(sys.stdin.read)

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_worker_dies_when_its_agent_is_killed() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        worker_pid, holder_pid = (int(x) for x in parent.stdout.readline().split())
        assert _alive(worker_pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        wait_for(lambda: not _alive(worker_pid), what="worker gone with its agent")
        assert _alive(holder_pid)  # its stdin was still open: the death signal did it
        os.kill(holder_pid, signal.SIGKILL)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
