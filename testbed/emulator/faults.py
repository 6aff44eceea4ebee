"""Fault-injection seam: knobs that the HTTP layer consults on every API request.

Per-request faults live here: a fixed error status (500s, 503s, 429s) and added latency
(slow responses).  Faults that act on the stored state are Emulator methods: ``drop_watches``
(end every watch mid-stream), ``compact`` (410 on resume) and ``restart`` (new
resourceVersions for every object, empty history: every resume gets 410, watches end).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Faults:
    """Mutable fault settings; change them from the loop thread (or via EmulatorThread)."""

    # When set, every /api and /apis request is answered with this HTTP status and a
    # matching Status body (e.g. 500 InternalError, 503 ServiceUnavailable, 429).
    error_status: int | None = None
    # Seconds to wait before handling each /api and /apis request.
    latency: float = 0.0

    def reset(self) -> None:
        self.error_status = None
        self.latency = 0.0
