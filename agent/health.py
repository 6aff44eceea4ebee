"""The agent's HTTP endpoint: /metrics for Prometheus, /healthz for liveness, /readyz for rollout.

/readyz answers 200 only once every initial LIST is done and every local pod known then has
been programmed once, so a DaemonSet rolling update waits for enforcement, not just a process.
"""

from __future__ import annotations

import collections.abc

import aiohttp.web
import prometheus_client

from agent import metrics


class Endpoint:
    def __init__(
        self,
        host: str,
        port: int,
        is_ready: collections.abc.Callable[[], bool],
        is_alive: collections.abc.Callable[[], bool],
        extra_routes: collections.abc.Callable[[aiohttp.web.Application], None] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.is_ready, self.is_alive = is_ready, is_alive
        self.extra_routes = extra_routes
        self._runner: aiohttp.web.AppRunner | None = None

    async def _metrics(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(
            body=metrics.exposition(),
            headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST},
        )

    async def _healthz(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        if self.is_alive():
            return aiohttp.web.Response(text="ok\n")
        return aiohttp.web.Response(status=503, text="event loop or worker unhealthy\n")

    async def _readyz(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        if self.is_ready():
            return aiohttp.web.Response(text="ready\n")
        return aiohttp.web.Response(status=503, text="not in sync or not every pod programmed\n")

    async def start(self) -> None:
        app = aiohttp.web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if self.extra_routes is not None:
            self.extra_routes(app)
        self._runner = aiohttp.web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
