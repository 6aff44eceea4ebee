"""Fault-injection seam: knobs that the HTTP layer consults on every API request.

Only trivial faults exist today (a fixed error status, added latency); dropping watches and
forcing 410 on resume are Emulator methods (``drop_watches``, ``compact``).  Richer faults
(restart with new RVs, partial failures) should be added here so handlers stay unchanged.
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
