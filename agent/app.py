"""Wires the agent together: API client, reflectors, store, reconciler, worker, endpoint.

It owns the process lifecycle: SIGTERM/SIGINT stop the watches and the worker and exit
cleanly; rules stay in every pod namespace (fail closed: a stopped agent keeps enforcing the
last ruleset it programmed, it does not open anything).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from agent import cni, config, health, heap, helper, helperlink, localapi, metrics, store
from agent.dataplane import client
from agent.flows import collector as flows_collector
from agent.k8s import adminwatch, clients, events, rest, watch
from agent.sync import leader, tamper
from agent.sync import loop as sync_loop

log = structlog.get_logger(__name__)


class StartupError(Exception):
    """The agent cannot start: no usable API credentials, or its port is taken."""


def api_client(settings: config.Settings) -> rest.Api:
    try:
        return clients.agent_client(settings.kubeconfig)
    except clients.CredentialsError as exc:
        raise StartupError(str(exc)) from exc


def before_threads(settings: config.Settings) -> rest.Api:
    """What the agent sets up before any of its threads runs: the cap on malloc arenas (it
    holds only for threads that allocate after it, agent.heap), then the API client."""
    heap.limit_arenas()
    return api_client(settings)


async def run(settings: config.Settings) -> int:
    """Run the agent until SIGTERM/SIGINT (exit 0) or a crashed task (exit 1)."""
    loop = asyncio.get_running_loop()
    api = before_threads(settings)
    queue: asyncio.Queue[watch.WatchEvent | watch.Relist] = asyncio.Queue()
    cluster = store.Store()
    dataplane = client.WorkerClient(settings.worker_timeout, settings.dataplane_threads)
    flows = (
        flows_collector.Collector(settings, cluster, dataplane) if settings.flow_capture else None
    )
    recorder = events.Recorder(api, settings.node_name)
    changes = tamper.Watch()
    rec = sync_loop.Reconciler(settings, cluster, dataplane, recorder, flows, changes)
    beat = Heartbeat(loop)
    reflectors: list[watch.Reflector] = []
    ready = functools.partial(_ready, rec, reflectors, settings.stale_after)
    local = localapi.LocalApi(rec, settings.node_name, ready)
    endpoint = health.Endpoint(
        settings.metrics_host, settings.metrics_port, ready, beat.alive, local.routes
    )
    plugin = await _cni(settings, queue, cluster, rec, dataplane, api)
    try:
        await endpoint.start()
    except OSError as exc:
        api.close()
        raise StartupError(
            f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: {exc}"
        ) from exc
    await dataplane.start()
    deliver = watch.threadsafe_delivery(loop, queue)
    reflectors += [
        watch.Reflector(name, fn, deliver, watch_timeout=settings.watch_timeout)
        for name, fn in watch.list_functions(api, settings.node_name).items()
    ]
    for reflector in reflectors:
        reflector.start()
    admin = _admin_watch(settings, api, cluster, reflectors, deliver)
    admin.start()
    link = await _start_children(settings, flows, changes)
    log.info(
        "agent_started",
        node=settings.node_name,
        backend=settings.backend,
        netns_dir=settings.netns_dir,
        metrics_port=endpoint.port,
    )
    writer = leader.PolicyStatusWriter(settings, api, cluster, rec.pods, recorder)
    tasks = _start_tasks(settings, rec.run(queue), beat, writer)
    tasks.append(asyncio.create_task(admin.run(), name="admin-discovery"))
    code = await _until_stopped(loop, tasks)
    for reflector in reflectors:
        reflector.stop()
    await _cancel(tasks)
    await asyncio.to_thread(writer.release)
    await _stop_children(flows, link, plugin)
    await dataplane.close()
    await endpoint.stop()
    api.close()
    log.info("agent_stopped", rules="left in place (fail closed)")
    return code


def _admin_watch(
    settings: config.Settings,
    api: rest.Api,
    cluster: store.Store,
    reflectors: list[watch.Reflector],
    deliver: watch.Delivery,
) -> adminwatch.AdminWatch:
    """The network-policy-api kinds: watched while their CRDs are served."""

    def make(resource: str, on_failure: Callable[[int | None], None]) -> watch.Reflector:
        fn = rest.lister(api, resource)
        timeout = settings.watch_timeout
        return watch.Reflector(resource, fn, deliver, watch_timeout=timeout, on_failure=on_failure)

    get = adminwatch.api_get(api)
    period = settings.admin_discovery_period
    return adminwatch.AdminWatch(get, cluster, reflectors, make, deliver, period=period)


async def _cni(
    settings: config.Settings,
    queue: asyncio.Queue[watch.WatchEvent | watch.Relist],
    cluster: store.Store,
    rec: sync_loop.Reconciler,
    dataplane: client.WorkerClient,
    api: rest.Api,
) -> cni.Server | None:
    """The unprotected-time metric, and the podseg-cni socket server (started) when one is
    configured, both hooked after each pass's commits (agent.cni)."""
    rec.after_commit.append(cni.Unprotected(lambda: cluster.cni_hints, rec.pods).after_commit)
    if not settings.cni_socket:
        return None
    server = cni.Server(settings.cni_socket, settings.netns_dir, queue, rec.pods, dataplane)
    rec.after_commit.append(server.after_commit)
    try:
        await server.start()
    except OSError as exc:
        api.close()
        raise StartupError(f"cannot serve the CNI socket {settings.cni_socket}: {exc}") from exc
    return server


def _start_tasks(
    settings: config.Settings,
    reconcile: Coroutine[Any, Any, None],
    beat: Heartbeat,
    writer: leader.PolicyStatusWriter,
) -> list[asyncio.Task[None]]:
    tasks = [
        asyncio.create_task(reconcile, name="reconciler"),
        asyncio.create_task(beat.run(), name="heartbeat"),
    ]
    if settings.policy_status:
        tasks.append(asyncio.create_task(writer.run(), name="policy-status"))
    return tasks


async def _start_children(
    settings: config.Settings,
    flows: flows_collector.Collector | None,
    changes: tamper.Watch,
) -> helperlink.Link:
    """The helper process with the drop reader and the change watcher, each when it is on
    (the dataplane worker is started first)."""
    link = helperlink.Link()
    if flows is not None:
        await flows.start()
        link.add(helper.DROPS, flows)
    if settings.tamper_watch:
        link.add(helper.CHANGES, changes)
    await link.start()
    return link


async def _stop_children(
    flows: flows_collector.Collector | None, link: helperlink.Link, plugin: cni.Server | None
) -> None:
    if plugin is not None:
        await plugin.close()
    if flows is not None:
        await flows.close()
    await link.close()


def _ready(rec: sync_loop.Reconciler, reflectors: list[watch.Reflector], after: float) -> bool:
    """`/readyz`: in sync and every pod programmed once, and no kind's mirror stale past
    `after` seconds."""
    ready = rec.ready and not any(r.stale(after) for r in reflectors)
    metrics.AGENT_READY.set(1 if ready else 0)
    return ready


class Heartbeat:
    """Proof that the event loop turns (`/healthz`): a beat a second, stale after 30 s."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.last = loop.time()

    def alive(self) -> bool:
        return self.loop.time() - self.last < 30.0

    async def run(self) -> None:
        while True:
            self.last = self.loop.time()
            await asyncio.sleep(1.0)


async def _until_stopped(loop: asyncio.AbstractEventLoop, tasks: list[asyncio.Task[None]]) -> int:
    """Wait for SIGTERM/SIGINT (0) or the end of a task (1 if it crashed)."""
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    for task in done:
        if task is not stopper and task.exception() is not None:
            log.error("task_crashed", task=task.get_name(), error=repr(task.exception()))
            code = 1
    log.info("agent_stopping", reason="signal" if stopper in done else "task ended")
    await _cancel([stopper])
    return code


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        # Re-cancel until done: on Python 3.11 a cancel that lands while an inner wait_for
        # completes is swallowed, and the reconciler would run on (seen in tests/chaos).
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
