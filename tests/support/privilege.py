"""The root tier: tests that need root, real network namespaces and the kernel's firewalls.

Such a test carries the `root` mark, given by `requires_root` or by the directory rule of
tests/conftest.py (everything under tests/kernel, tests/e2e and tests/chaos). tests/conftest.py
skips every `root` test when `missing()` names a reason, so `pytest -m "not root"` and an
unprivileged run never create a namespace; with CI=true such a skip fails the run instead.
"""

from __future__ import annotations

import os
import shutil

import pytest

# The tools every root test drives; a test needing more (ipset, iptables-restore, promtool)
# says so with its own skipif mark, which the CI guard turns into a failure all the same.
TOOLS = ("ip", "nft")

IS_ROOT = os.geteuid() == 0

requires_root = pytest.mark.root


def missing() -> str | None:
    """Why this process cannot run the root tier (None: it can)."""
    if not IS_ROOT:
        return "needs root (real network namespaces, nftables and iptables)"
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    if absent:
        return f"needs {' and '.join(absent)} on PATH (scripts/setup.sh installs them)"
    return None


def has(*tools: str) -> bool:
    """Every one of `tools` is on PATH."""
    return all(shutil.which(tool) for tool in tools)
