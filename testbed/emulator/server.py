"""The emulator's lifecycle: ``Emulator`` (inside an asyncio loop) and ``EmulatorThread``.

``Emulator`` binds an aiohttp server speaking the Kubernetes REST API on 127.0.0.1 (an
ephemeral port by default).  ``EmulatorThread`` runs one in a private thread and event loop
for synchronous callers (pytest fixtures, the demo).  Both expose test backdoors (``insert``,
``remove``) and fault hooks (``faults``, ``drop_watches``, ``compact``, ``restart``), all safe
to call from any thread: calls from outside the loop thread are marshalled onto the loop and
waited for.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp.web
import structlog

from testbed.emulator import faults, handlers, kubeconfig, objectstore, registry

log = structlog.get_logger()
T = TypeVar("T")
CALL_TIMEOUT = 10.0


class Emulator:
    """A Kubernetes API server emulator bound to ``host:port`` (0 means any free port)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bookmark_interval: float = 5.0,
        history: int = 10000,
        validate: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.url = ""
        self.faults = faults.Faults()
        self.store = objectstore.Store(history=history)
        self.registry = registry.Registry(self.store, validate=validate)
        self._api = handlers.Api(self.registry, self.faults, bookmark_interval)
        self._runner: aiohttp.web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    async def start(self) -> None:
        app = aiohttp.web.Application()
        self._api.install(app)
        # handler_cancellation: a watch whose client disconnects is torn down at once.
        runner = aiohttp.web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self.url = f"http://{self.host}:{self.port}"
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        log.info("emulator.started", url=self.url)

    async def stop(self) -> None:
        closed = self.store.close_watchers()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._loop = None
        log.info("emulator.stopped", url=self.url, watches_closed=closed)

    def write_kubeconfig(self, path: str) -> None:
        if not self.url:
            raise RuntimeError("start the emulator before writing a kubeconfig")
        kubeconfig.write(path, self.url)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the emulator's loop thread and return its result.

        Called on the loop thread (or before start) it runs inline; from any other thread it
        is scheduled with call_soon_threadsafe and this thread blocks until it has run.
        """
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            return fn(*args)
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn(*args))
            except BaseException as exc:
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return done.result(timeout=CALL_TIMEOUT)

    def insert(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` bypassing defaulting and validation (create, or replace if present).

        ``apiVersion``/``kind`` select the resource; a namespaced object without a namespace
        goes to ``default``; the namespace need not exist.  uid/creationTimestamp are kept for
        an existing object, else filled in; ``status`` is stored as given.  The RV is bumped
        and ADDED/MODIFIED is sent to watchers.  Returns the stored object.  Thread-safe.
        """
        return self.call(self.registry.insert, obj)

    def remove(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        """Delete an object without any API checks (DELETED is sent).  Thread-safe."""
        return self.call(self.registry.remove, api_version, kind, namespace, name)

    def drop_watches(self) -> int:
        """Fault: end every open watch stream now (cleanly).  Thread-safe."""
        return self.call(self.store.close_watchers)

    def compact(self) -> None:
        """Fault: forget the event history, so resuming any older watch gets 410.  Thread-safe."""
        self.call(self.store.compact)

    def restart(self) -> int:
        """Fault: restart with new resourceVersions (objects kept, every resume gets 410,
        open watches end).  Returns the watches closed.  Thread-safe."""
        return self.call(self.store.restart)

    @property
    def watch_count(self) -> int:
        """Number of open watch streams (lets tests wait until a client is watching)."""
        return self.store.watcher_count

    @property
    def resource_version(self) -> int:
        return self.store.rv


class EmulatorThread:
    """An Emulator running in its own thread and event loop, for synchronous callers."""

    def __init__(self, **kwargs: Any) -> None:
        self.emulator = Emulator(**kwargs)
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="k8s-emulator", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.emulator.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def start(self) -> None:
        """Start serving; returns once the port is bound (raises if binding failed)."""
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("emulator did not start within 30s")
        if self._error is not None:
            raise RuntimeError("emulator failed to start") from self._error
        self.url = self.emulator.url

    def stop(self) -> None:
        """Close all watches and the server, then end the thread.  Idempotent."""
        loop = self._loop
        if loop is None or not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self.emulator.stop(), loop)
        future.result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=30)
        self._loop = None

    def write_kubeconfig(self, path: str) -> None:
        self.emulator.write_kubeconfig(path)

    @property
    def faults(self) -> faults.Faults:
        return self.emulator.faults

    def insert(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self.emulator.insert(obj)

    def remove(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return self.emulator.remove(api_version, kind, namespace, name)

    def drop_watches(self) -> int:
        return self.emulator.drop_watches()

    def compact(self) -> None:
        self.emulator.compact()

    def restart(self) -> int:
        return self.emulator.restart()

    @property
    def watch_count(self) -> int:
        return self.emulator.call(lambda: self.emulator.watch_count)

    @property
    def resource_version(self) -> int:
        return self.emulator.call(lambda: self.emulator.resource_version)
