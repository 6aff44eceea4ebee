"""The responder's listening socket with a cap on open connections.

aiohttp bounds how long a client may take to send a request's headers (its keep-alive timeout
runs from the connection's start and from each answer, and closes a connection still waiting
for a complete request then) and the app bounds the body read, but nothing bounds how many
connections are open at once. `CappedSite` serves the app like aiohttp's `TCPSite`, through a
protocol wrapper that counts open connections: one past `--max-connections` is answered 503
and closed at once, counted in `podseg_responder_connections_refused_total`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import aiohttp.web
import structlog

from agent import metrics

log = structlog.get_logger(__name__)

LOG_INTERVAL = 60.0  # seconds between two log lines about refused connections
_BODY = json.dumps(
    {"outcome": "busy", "message": "too many open connections; retry later"}
).encode()
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n" + f"Content-Length: {len(_BODY)}\r\n\r\n".encode() + _BODY
)


class ConnectionCap:
    """How many connections are open, and at most how many may be."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0
        self._logged_at = -LOG_INTERVAL
        self._refused_at_log = 0

    def admit(self) -> bool:
        if self.open >= self.limit:
            self.refused += 1
            metrics.RESPONDER_CONNECTIONS_REFUSED.inc()
            now = time.monotonic()
            if now - self._logged_at >= LOG_INTERVAL:
                log.warning(
                    "responder.connections_full",
                    limit=self.limit,
                    refused_since_last_line=self.refused - self._refused_at_log,
                )
                self._logged_at, self._refused_at_log = now, self.refused
            return False
        self.open += 1
        metrics.RESPONDER_CONNECTIONS.inc()
        return True

    def release(self) -> None:
        self.open -= 1
        metrics.RESPONDER_CONNECTIONS.dec()


class _Counted(asyncio.Protocol):
    """aiohttp's protocol for one connection, admitted by the cap (or refused with a 503)."""

    def __init__(self, inner: asyncio.Protocol, cap: ConnectionCap) -> None:
        self._inner = inner
        self._cap = cap
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._cap.admit():
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(REFUSAL)
            transport.close()
            return
        self._admitted = True
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._admitted:
            self._admitted = False
            self._cap.release()
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def pause_writing(self) -> None:
        if self._admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self._inner.resume_writing()


class CappedSite(aiohttp.web.BaseSite):
    """aiohttp's TCPSite, with every connection counted against `cap`."""

    def __init__(
        self, runner: aiohttp.web.BaseRunner, host: str, port: int, cap: ConnectionCap
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._cap = cap

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        factory: Callable[[], asyncio.Protocol] = server
        cap = self._cap
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Counted(factory(), cap), self._host, self._port, backlog=self._backlog
        )
