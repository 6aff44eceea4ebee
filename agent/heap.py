"""Keeps Python's cyclic garbage collector off the path to enforcement.

The agent mirrors every pod of the cluster: at 10,000 pods that is about a million long-lived
objects, and a full (oldest-generation) collection walks all of them. Measured: up to 106 ms
per collection, landing in the middle of whichever pass is running (the p99 of time to
enforce). The model objects form no reference cycles, so they never need the cyclic collector:
refcounting frees them. After loading a full LIST, the loaded objects are moved to the
collector's permanent generation (`gc.freeze`), so later collections walk only what changed
since; no collection runs while a LIST is loaded.

And a LIST leaves free memory behind: its pages' JSON text and parsed objects (tens of MiB
with realistic pods), the first pass's renderings. The C allocator keeps freed pages for
reuse, so the agent would carry that transient peak for its whole life; after a bulk load its
free pages go back to the system (`trim`).

And threads: glibc gives each thread that allocates its own malloc arena (up to 8 per core),
and each arena keeps its own free memory. The agent's threads (one reflector per kind, the
LIST read-ahead, `asyncio.to_thread`) only take turns under the interpreter lock, so they
gain nothing from separate arenas; the agent caps them at two before it starts any thread
(`limit_arenas`: 6 MiB less PSS at a cold start with 10,000 remote pods,
docs/benchmarks/2026-12-06-churn-and-memory.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def bulk_load() -> Iterator[None]:
    """Load many long-lived objects without collections, then exempt them from future ones."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
        trim()


def trim() -> bool:
    """Give the C allocator's free pages back to the system (glibc's `malloc_trim`, every
    arena); False where there is no such call."""
    try:
        return bool(ctypes.CDLL(None).malloc_trim(0))
    except (OSError, AttributeError):
        return False


M_ARENA_MAX = -8  # mallopt parameter (glibc's malloc.h)
ARENAS = 2


def limit_arenas(count: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas at `count` (threads created afterwards share them); False
    where there is no such call."""
    try:
        return bool(ctypes.CDLL(None).mallopt(M_ARENA_MAX, count))
    except (OSError, AttributeError):
        return False
