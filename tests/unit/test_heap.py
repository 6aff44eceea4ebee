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
