"""The agent's child processes load only what they run: each is a separate interpreter, and
every module it imports costs its memory on every node (the drop reader and the change watcher
went from about 13 MiB of imports each to about 2 MiB, and now share one interpreter, the
helper's).

Each child is started as the agent starts it (`python -m <module>`, through `runpy`), runs its
loop until its stdin closes, and then prints its own `sys.modules`: what it really loaded,
imports inside functions included."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import helperproc

# Started like `python -m module`; when its loop has ended, the module it ran and the process's
# modules go to stderr as one JSON line.
RUN = """
import json, runpy, sys
ran = runpy.run_module(sys.argv[1], run_name="__main__", alter_sys=True)
print(json.dumps([ran["__spec__"].name, sorted(sys.modules)]), file=sys.stderr)
"""

# What no helper needs: the agent's API client, logging and metrics stacks, its event loop, and
# the package metadata machinery.
AGENT_ONLY = {
    "kubernetes",
    "structlog",
    "prometheus_client",
    "aiohttp",
    "asyncio",
    "importlib.metadata",
}
# The helper's listeners (NFLOG, nftables notifications) also need neither the worker protocol
# nor the renderers nor `dataclasses` (which brings `inspect`, `ast`, `dis`, ...).
LISTENER_FREE = AGENT_ONLY | {
    "dataclasses",
    "inspect",
    "agent.dataplane.protocol",
    "agent.dataplane.nft.render",
    "agent.dataplane.ipt.render",
}


def loaded_by(module: str) -> set[str]:
    """The modules the helper `module` had loaded when its loop ended at stdin EOF."""
    result = subprocess.run(
        [sys.executable, "-c", RUN, module],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=helperproc.helper_env(),  # what the agent gives each child (the helper needs it)
    )
    assert result.returncode == 0, result.stderr
    ran, modules = json.loads(result.stderr.strip().splitlines()[-1])
    assert ran.removesuffix(".__main__") == module  # it ran that helper's main, to its end
    return set(modules)


def test_the_helper_loads_neither_agent_stacks_nor_dataclasses() -> None:
    modules = loaded_by("agent.helper")
    assert modules & LISTENER_FREE == set()
    assert {"agent.flows.reader", "agent.dataplane.watcher"} <= modules  # both parts, one process


def test_the_worker_loads_none_of_the_agents_stacks() -> None:
    assert loaded_by("agent.dataplane.worker") & AGENT_ONLY == set()
