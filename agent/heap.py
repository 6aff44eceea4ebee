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
