"""The agent's side of podseg-cni (deploy/cni, docs/cni.md): a unix-socket server that programs
a new pod as soon as its sandbox exists, before the API shows the pod's IP.

Why: without it the agent learns a pod's IPs from the API only after the runtime started the
pod, and a pod's first packets leave unprotected. The plugin closes the new namespace (a
pending table), then sends one JSON line: the pod's namespace and name, its netns path, its
IPs. The server queues that as a `cni` event for the reconciler (the store lends the pod the
plugin's IPs, the pass places it in the named namespace without scanning the others), and
answers `{"ok": true}` once the pod's real ruleset is committed there (which removed the
pending table in the same transaction). The plugin's own timeout bounds the wait: when it
hangs up, the waiter goes. Also here: `podseg_pod_unprotected_seconds`, observed at each
pod's first commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import os
import time
from collections.abc import Callable
from typing import Any

import structlog

from agent import metrics, store
from agent.dataplane import netns, protocol
from agent.dataplane.nft import pending
from agent.k8s import watch
from agent.sync import pod as sync_pod

log = structlog.get_logger(__name__)

MAX_REQUEST = 64 * 1024
MAX_WAIT = 120.0  # seconds: a request whose plugin never hangs up is dropped after this


class BadRequest(ValueError):
    """A request the server cannot read; answered with `ok: false` and counted."""


@dataclasses.dataclass(frozen=True)
class Request:
    namespace: str
    name: str
    netns: str
    ips: tuple[str, ...]
    container_id: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse(line: bytes) -> Request:
    """A request line as the plugin sends it (deploy/cni/agent.go); BadRequest otherwise."""
    try:
        raw = json.loads(line)
    except ValueError as exc:
        raise BadRequest(f"not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise BadRequest("not an object")
    fields = {k: raw.get(k) for k in ("namespace", "name", "netns", "containerId")}
    for key, value in fields.items():
        if not isinstance(value, str) or (key != "containerId" and not value):
            raise BadRequest(f"missing {key}")
    ips = raw.get("ips")
    if not isinstance(ips, list) or not ips:
        raise BadRequest("missing ips")
    try:
        addrs = tuple(str(ipaddress.ip_address(ip)) for ip in ips)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"bad ip: {exc}") from exc
    netns = str(fields["netns"])
    if not os.path.isabs(netns):
        raise BadRequest("netns must be an absolute path")
    return Request(
        str(fields["namespace"]), str(fields["name"]), netns, addrs, str(fields["containerId"])
    )


def normalize(path: str, netns_dir: str) -> str:
    """`path` as the agent's scan names it: the entry of the same name in the netns directory
    when it is the same namespace (/run/netns and /var/run/netns are one directory; a netns
    directory may link the runtime's files), else `path` itself. One stat each, no listing."""
    candidate = os.path.join(netns_dir, os.path.basename(path))
    with contextlib.suppress(OSError):
        mine, theirs = os.stat(candidate), os.stat(path)
        if (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino):
            return candidate
    return path


ANSWER = json.dumps({"ok": True}).encode() + b"\n"


@dataclasses.dataclass
class Waiter:
    request: Request
    netns: str
    ino: int
    since: float  # wall clock of the request
    done: asyncio.Future[bool]
    writer: asyncio.StreamWriter | None = None  # the plugin's connection
    unpending: bool = False  # removing the pending table itself (see `after_commit`)
    answered: float = 0.0  # monotonic time the answer was written

    def answer(self) -> None:
        """Tell the plugin now, from the reconciler's hook: the line goes out before the rest
        of the pass's bookkeeping (cuts, gauges) and before this request's task resumes."""
        if self.done.done():
            return
        self.done.set_result(True)
        self.answered = time.monotonic()
        if self.writer is not None:
            with contextlib.suppress(OSError, RuntimeError):
                self.writer.write(ANSWER)


class Server:
    """The socket, the waiting ADDs, and the reconciler hook that answers them."""

    def __init__(
        self,
        path: str,
        netns_dir: str,
        queue: asyncio.Queue[watch.WatchEvent | watch.Relist],
        pods: dict[str, sync_pod.PodState],
        dataplane: protocol.Dataplane,
    ) -> None:
        self.path, self.netns_dir, self.queue = path, netns_dir, queue
        self.pods, self.dataplane = pods, dataplane
        self.waiting: dict[str, list[Waiter]] = {}
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a previous agent's socket
        self._server = await asyncio.start_unix_server(self._handle, self.path, limit=MAX_REQUEST)
        os.chmod(self.path, 0o600)
        log.info("cni_socket_serving", path=self.path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        for waiters in self.waiting.values():
            for waiter in waiters:
                waiter.done.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10.0)
            request = parse(line)
        except (TimeoutError, BadRequest, ValueError, OSError) as exc:
            metrics.CNI_REQUESTS.labels("bad_request").inc()
            log.warning("cni_request_refused", error=str(exc) or type(exc).__name__)
            await _reply(writer, {"ok": False, "error": f"bad request: {exc}"})
            return
        started = time.monotonic()
        result, answered = await self._serve(request, reader, writer)
        metrics.CNI_REQUESTS.labels(result).inc()
        log.info(
            "cni_answered" if result == "programmed" else "cni_gone",
            pod=request.name,
            namespace=request.namespace,
            wait_ms=round(((answered or time.monotonic()) - started) * 1000, 3),
        )
        if result == "programmed":  # the answer is written (`Waiter.answer`)
            with contextlib.suppress(OSError):
                await writer.drain()
        await _close(writer)

    async def _serve(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, float]:
        """ "programmed" or "gone", and when the answer was written (0: none was)."""
        netns = normalize(request.netns, self.netns_dir)
        try:
            ino = os.stat(netns).st_ino
        except OSError:
            ino = 0
        loop = asyncio.get_running_loop()
        waiter = Waiter(request, netns, ino, time.time(), loop.create_future(), writer)
        self.waiting.setdefault(request.key, []).append(waiter)
        metrics.PODS_PENDING.inc()
        log.info("cni_add", pod=request.name, namespace=request.namespace, netns=netns)
        obj: dict[str, Any] = {
            "key": request.key,
            "ips": list(request.ips),
            "netns": netns,
            "containerId": request.container_id,
        }
        self.queue.put_nowait(watch.WatchEvent(store.CNI, "ADDED", obj, time.monotonic()))
        hangup: asyncio.Future[Any] = asyncio.ensure_future(reader.read(1))  # EOF: gave up
        try:
            watched: set[asyncio.Future[Any]] = {waiter.done, hangup}
            done, _ = await asyncio.wait(watched, timeout=MAX_WAIT, return_when="FIRST_COMPLETED")
            if waiter.done in done and not waiter.done.cancelled():
                return "programmed", waiter.answered
            return "gone", 0.0
        finally:
            hangup.cancel()
            metrics.PODS_PENDING.dec()
            waiters = self.waiting.get(request.key, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self.waiting.pop(request.key, None)

    def after_commit(self, plans: list[sync_pod.Plan]) -> None:
        """The reconciler's hook after a pass's commits: answer every waiting ADD whose pod
        is now enforced in the namespace the plugin named."""
        for key, waiters in list(self.waiting.items()):
            state = self.pods.get(key)
            if state is None or state.state is not sync_pod.Status.ENFORCED:
                continue
            for waiter in waiters:
                slot = _slot_of(state, waiter)
                if slot is None or slot.fingerprint is None or waiter.done.done():
                    continue
                fresh = state.committed_wall is not None and state.committed_wall >= waiter.since
                if fresh:
                    waiter.answer()
                elif not waiter.unpending:  # adopted or in place: not removed by a commit
                    waiter.unpending = True
                    task = asyncio.create_task(self._unpend(waiter, slot.target))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def _unpend(self, waiter: Waiter, target: netns.Target) -> None:
        try:
            request = protocol.Apply(target.path, target.ino, pending.delete_script())
            await self.dataplane.call(request)
        except protocol.DataplaneError as exc:
            log.warning("cni_pending_not_removed", pod=waiter.request.key, error=str(exc))
            return
        waiter.answer()


def _slot_of(state: sync_pod.PodState, waiter: Waiter) -> sync_pod.Slot | None:
    for slot in state.slots.values():
        if slot.target.path == waiter.netns or (waiter.ino and slot.target.ino == waiter.ino):
            return slot
    return None


async def _reply(writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        writer.write(json.dumps(body).encode() + b"\n")
        await writer.drain()
    await _close(writer)


async def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        writer.close()
        await writer.wait_closed()


class Unprotected:
    """`podseg_pod_unprotected_seconds`: observed once per pod, at its first commit."""

    def __init__(
        self,
        hints: Callable[[], dict[str, store.CniHint]],
        pods: dict[str, sync_pod.PodState],
    ) -> None:
        self.hints, self.pods = hints, pods
        self.seen: set[str] = set()
        self.started = time.time()  # namespaces older than the agent are not timed

    def after_commit(self, plans: list[sync_pod.Plan]) -> None:
        for plan in plans:
            key = plan.state.key
            if not plan.done or plan.failed or key in self.seen:
                continue
            self.seen.add(key)
            if key in self.hints():
                metrics.POD_UNPROTECTED_SECONDS.observe(0.0)
                continue
            try:
                born = os.stat(plan.target.path).st_mtime
            except OSError:
                continue
            if born >= self.started:
                metrics.POD_UNPROTECTED_SECONDS.observe(max(0.0, time.time() - born))
        if len(self.seen) > 2 * len(self.pods) + 1000:  # bounded: pods no longer local go
            self.seen &= self.pods.keys()
