"""Shared test helpers: root detection and polling with a deadline (never bare sleeps)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

IS_ROOT = os.geteuid() == 0
HAS_TOOLS = all(shutil.which(t) for t in ("ip", "nft"))

requires_root = pytest.mark.skipif(
    not (IS_ROOT and HAS_TOOLS), reason="needs root with ip and nft (real namespaces and nftables)"
)


def wait_for(
    check: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `check` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T = check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or check}: {last!r}"
            )
        time.sleep(interval)
        last = check()
    return last
