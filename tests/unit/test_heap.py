"""agent.heap: a bulk load runs without collections, then its objects leave the collector's
view (frozen), and collection is back on as it was."""

from __future__ import annotations

import gc

from agent import heap


def test_bulk_load_freezes_what_it_loaded_and_restores_collection() -> None:
    assert gc.isenabled()
    before = gc.get_freeze_count()
    try:
        with heap.bulk_load():
            assert not gc.isenabled()
            loaded = [{"pod": i} for i in range(1000)]
        assert gc.isenabled()
        assert gc.get_freeze_count() >= before + len(loaded)
    finally:
        gc.unfreeze()


def test_a_failed_load_still_restores_collection() -> None:
    try:
        try:
            with heap.bulk_load():
                raise RuntimeError("LIST broke")
        except RuntimeError:
            pass
        assert gc.isenabled()
    finally:
        gc.unfreeze()


def test_a_bulk_load_gives_its_free_pages_back() -> None:
    """A transient of 64 MiB of objects from the C allocator (above Python's small-object
    size, as a LIST page's parsed strings) freed inside the load: afterwards the process's
    resident memory is back near where it was, not at the peak (glibc keeps freed pages
    unless trimmed)."""

    def resident_kib() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    before = resident_kib()
    try:
        with heap.bulk_load():
            transient = [bytes(600) + bytes([i % 256]) for i in range(110_000)]
            peak = resident_kib()
            kept = transient[::1000]  # a few survivors scattered through the heap
            del transient
    finally:
        gc.unfreeze()
    assert peak - before > 50_000
    assert resident_kib() - before < (peak - before) / 2
    assert len(kept) == 110
