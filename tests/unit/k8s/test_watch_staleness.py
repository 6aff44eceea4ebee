"""A reflector knows when its mirror went stale: from the first failed refresh of a run of
failures until the next successful LIST (what /readyz reports), without any API server."""

from __future__ import annotations

import threading
import time
from typing import Any

from agent.k8s import watch
from tests.support import polling


class Lister:
    """A list function that fails while `down` is set, then lists nothing and blocks."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0
        self.release = threading.Event()

    def __call__(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.down:
            raise ConnectionRefusedError("connection refused")
        if kwargs.get("watch"):
            self.release.wait(5)
            raise ConnectionResetError("watch ended")

        class Response:
            data = b'{"items": [], "metadata": {"resourceVersion": "1"}}'

        return Response()


def test_stale_from_the_first_failure_until_a_list_works() -> None:
    lister = Lister()
    delivered: list[object] = []
    reflector = watch.Reflector("pods", lister, delivered.append, backoff_max=0.05)
    assert not reflector.stale(0.0)
    reflector.start()
    try:
        polling.wait_for(lambda: lister.calls >= 2, what="retries while down")
        assert reflector.failing_since is not None
        assert reflector.stale(0.0) and not reflector.stale(3600.0)
        first = reflector.failing_since
        polling.wait_for(lambda: lister.calls >= 4, what="more retries")
        assert reflector.failing_since == first  # counted from the first failure of the run
        lister.down = False
        polling.wait_for(lambda: delivered, what="a relist once the API answers")
        assert not reflector.stale(0.0)
        assert time.monotonic() > first
    finally:
        reflector.stop()
        lister.release.set()
        reflector.join(5)
