"""The agent's child processes (the dataplane worker; the helper, which runs the drop reader and
the change watcher): how they are started and how they make sure they never outlive the agent.

A child left running after its agent died could go on acting on stale requests. The agent
passes its pid in the child's environment; the child asks the kernel for SIGKILL when its
parent dies (an nft transaction cut short that way is aborted whole), and leaves at once if
it was already re-parented before it could ask.

Both sides import this module, so it imports `asyncio` only inside the agent-side functions:
a child's interpreter stays without the event loop machinery it never runs (about 4 MiB of
the helper process; tests/unit/test_child_imports.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

PR_SET_PDEATHSIG = 1
# The environment variable naming the agent's pid, per child.
WORKER_PARENT_ENV = "PODSEG_WORKER_PARENT"
HELPER_PARENT_ENV = "PODSEG_HELPER_PARENT"


async def spawn(
    module: str, parent_env: str, limit: int, extra_env: Mapping[str, str] | None = None
) -> asyncio.subprocess.Process:
    """`python -m module` with pipes on stdin/stdout (lines up to `limit` bytes), told our pid
    in `parent_env` (and `extra_env` besides our own environment)."""
    import asyncio

    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=limit,
        env={**os.environ, **(extra_env or {}), parent_env: str(os.getpid())},
    )


def die_with_parent(parent_env: str) -> None:
    """In the child: SIGKILL when the parent dies; exit now if it is gone already."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    expected = os.environ.get(parent_env)
    if expected is not None and os.getppid() != int(expected):
        os._exit(1)


async def stop(proc: asyncio.subprocess.Process | None, grace: float = 2.0) -> None:
    """End a child: close its stdin (it exits at EOF), SIGKILL it after `grace` seconds."""
    import asyncio

    if proc is None or proc.returncode is not None:
        return
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
