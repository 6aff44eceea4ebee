"""agent.heap: a bulk load runs without collections, then its objects leave the collector's
view (frozen), and collection is back on as it was."""

from __future__ import annotations

import gc
import pathlib
import subprocess
import sys

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


# Eight threads allocate at once (all alive, none has exited, so none can hand its arena on);
# then the C allocator's own report counts its arenas.
ARENAS = """
import ctypes, sys, threading
from agent import heap
if sys.argv[1] == "limited":
    assert heap.limit_arenas()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
together = threading.Barrier(8, timeout=30)
def work():
    together.wait()
    held = [libc.malloc(4096) for _ in range(64)]
    together.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join(30)
report = libc.fopen(sys.argv[2].encode(), b"w")
libc.malloc_info(0, report)
libc.fclose(report)
print(open(sys.argv[2]).read().count("<heap nr="))
"""


def arenas_after_eight_threads(mode: str, report: pathlib.Path) -> int:
    result = subprocess.run(
        [sys.executable, "-c", ARENAS, mode, str(report)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(result.stdout.strip())


def test_threads_share_the_capped_arenas(tmp_path: pathlib.Path) -> None:
    assert arenas_after_eight_threads("limited", tmp_path / "report.xml") <= heap.ARENAS
    # The control: without the cap the same threads get arenas of their own.
    assert arenas_after_eight_threads("default", tmp_path / "report.xml") > heap.ARENAS
