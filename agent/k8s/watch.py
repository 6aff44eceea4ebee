"""List-then-watch of one resource kind, feeding raw events to the agent's event loop.

Each resource gets a reflector thread (the official client is synchronous): it LISTs (in
pages), hands the whole list over as one `Relist` (the store replaces its content, which also
catches deletes missed while disconnected), then WATCHes from the list's resourceVersion with
bookmarks, re-watching from the last seen version when the server ends the stream. An
expired version (410) means relist; any other failure backs off exponentially with jitter and
relists. Nothing is lost: every path back goes through a full LIST.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import random
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from agent import metrics, model
from agent.k8s import apiclient, convert, errors, podwire, rest

log = structlog.get_logger(__name__)

ListFn = rest.ListFn
Slim = podwire.Slim
PageReader = Callable[[bytes], podwire.Page]

# Per kind, what the mirror keeps of each object as it arrives (agent.k8s.convert.slim_pod).
SLIM: dict[str, Slim] = {"pods": convert.slim_pod}
# Per kind, how a reflector reads a LIST page when not with `json` (agent.k8s.podwire: pods
# decoded straight into the model; what it declines, the old way).
PAGES: dict[str, PageReader] = {"pods": podwire.page}


@dataclasses.dataclass(frozen=True)
class WatchEvent:
    resource: str
    type: str  # ADDED | MODIFIED | DELETED
    obj: dict[str, Any] | model.Pod  # a pod decoded typed arrives as its model (podwire)
    received: float  # time.monotonic() when the line arrived


@dataclasses.dataclass(frozen=True)
class Relist:
    resource: str
    items: list[Any]  # the raw objects (dicts); of pods, mostly their models (podwire.page)
    resource_version: str
    received: float


Delivery = Callable[[WatchEvent | Relist], None]


def list_functions(api: rest.Api, node_name: str) -> dict[str, ListFn]:
    """The list/watch function of every kind the agent mirrors (agent.k8s.rest).

    Every Node: the node guard keeps pods away from all nodes' addresses, and the agent's own
    Node (found by name in the store) is the "pod's node" that ingress always admits. Services
    and EndpointSlices: Service traffic (agent.calc.services)."""
    return {resource: rest.lister(api, resource) for resource in rest.PATHS}


class Reflector:
    """Keeps one resource kind mirrored into `deliver`, forever, until `stop()`."""

    def __init__(
        self,
        resource: str,
        list_fn: ListFn,
        deliver: Delivery,
        *,
        watch_timeout: int = 300,
        page_size: int = 500,
        backoff_max: float = 30.0,
        on_failure: Callable[[int | None], None] | None = None,
    ) -> None:
        self.resource = resource
        # Told the HTTP status (None: no answer) of each failed LIST or watch, from this
        # reflector's thread (agent.k8s.adminwatch: a 404 means the kind may be gone).
        self.on_failure = on_failure
        self.list_fn = list_fn
        self.deliver = deliver
        self.watch_timeout = watch_timeout
        self.page_size = page_size
        self.backoff_max = backoff_max
        self.slim = SLIM.get(resource)
        self.pages = PAGES.get(resource)
        self._stop = threading.Event()
        self._response: Any = None
        # Monotonic time of the first failure of the current run of failures; None while
        # the mirror is current (the last LIST or watch stream worked).
        self.failing_since: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"watch-{resource}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            # Shut the socket down first: close() alone blocks until the reader thread's
            # pending read returns (the next event or bookmark), which held SIGTERM for seconds.
            with contextlib.suppress(Exception):
                response.connection.sock.shutdown(socket.SHUT_RDWR)
            # Closing a half-read socket may raise; we are leaving anyway.
            with contextlib.suppress(Exception):
                response.close()

    def stale(self, after: float) -> bool:
        """Whether this kind's mirror has failed to refresh for more than `after` seconds."""
        since = self.failing_since
        return since is not None and time.monotonic() - since > after

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _list(self) -> Relist:
        return list_all(self.resource, self.list_fn, self.page_size, self.slim, self.pages)

    def _watch(self, resource_version: str) -> str:
        """Stream events from `resource_version`; return the last version seen."""
        response = self.list_fn(
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout,
            _preload_content=False,
            _request_timeout=(5, self.watch_timeout + 30),
        )
        self._response = response
        try:
            for line in apiclient.lines(response):
                if self._stop.is_set():
                    break
                if not line:
                    continue
                typed = podwire.event(line) if self.pages is not None else None
                if typed is not None:
                    kind, pod = typed
                    metrics.WATCH_EVENTS.labels(self.resource, kind).inc()
                    resource_version = pod.resource_version or resource_version
                    self.deliver(WatchEvent(self.resource, kind, pod, time.monotonic()))
                    continue
                resource_version = self._event(json.loads(line), resource_version)
        finally:
            self._response = None
            response.release_conn()
        return resource_version

    def _event(self, event: Any, resource_version: str) -> str:
        """Deliver a watch event read with `json`; the resourceVersion to watch on from."""
        kind = event.get("type")
        obj = event.get("object") or {}
        metrics.WATCH_EVENTS.labels(self.resource, str(kind)).inc()
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise errors.Expired(obj.get("message", "resourceVersion expired"))
            raise RuntimeError(f"watch error event: {obj.get('message', obj)}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            resource_version = str(version)
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            if self.slim is not None and isinstance(obj, dict):
                obj = self.slim(obj)
            self.deliver(WatchEvent(self.resource, kind, obj, time.monotonic()))
        return resource_version

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                relist = self._list()
                self.deliver(relist)
                self.failing_since = None
                version = relist.resource_version
                backoff = 0.2
                while not self._stop.is_set():
                    version = self._watch(version)
            except errors.Expired as exc:
                metrics.WATCH_RELISTS.labels(self.resource).inc()
                log.info("watch_expired_relisting", resource=self.resource, reason=str(exc))
            except Exception as exc:
                if self._stop.is_set():
                    return
                code = errors.status_code(exc)
                if code == 410:
                    metrics.WATCH_RELISTS.labels(self.resource).inc()
                    continue
                if self.on_failure is not None:
                    self.on_failure(code)
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                metrics.API_ERRORS.labels(self.resource).inc()
                metrics.WATCH_RELISTS.labels(self.resource).inc()
                delay = backoff * (0.5 + random.random())
                log.warning(
                    "api_error_backing_off",
                    resource=self.resource,
                    error=errors.describe(exc),
                    retry_in=round(delay, 2),
                )
                self._stop.wait(delay)
                backoff = min(backoff * 2, self.backoff_max)


def list_all(
    resource: str,
    list_fn: ListFn,
    page_size: int = 500,
    slim: Slim | None = None,
    read: PageReader | None = None,
) -> Relist:
    """Every object of `resource`, listed in pages of `page_size`; `slim` trims each object
    as its page arrives, so a whole list never holds every object in full; `read`, when
    given, reads each page instead of `json` and `slim` (PAGES).

    The next page is asked for while this one is parsed: the API server writes a list's
    metadata, and so its continue token, before its items, so the token is read off the
    page's first bytes (`peek_continue`) and the next request runs on a helper thread while
    this thread decodes and trims the page (the server's encoding and the agent's decoding of
    a 10,000-pod list overlap on two cores instead of taking turns). The token decoded from
    the whole page decides: a read-ahead with another token is dropped and asked again.
    """
    items: list[Any] = []
    if read is None:
        read = functools.partial(podwire.json_page, slim=slim)

    def fetch(token: str | None) -> bytes:
        kwargs: dict[str, Any] = {"limit": page_size, "_preload_content": False}
        if token:
            kwargs["_continue"] = token
        data: bytes = list_fn(_request_timeout=(5, 60), **kwargs).data
        return data

    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"list-{resource}")
    try:
        data = fetch(None)
        while True:
            peeked = peek_continue(data)
            ahead = pool.submit(fetch, peeked) if peeked else None
            page, version, token = read(data)
            del data
            items.extend(page)
            del page  # the page's objects go now, not with the next page
            if ahead is not None and token == peeked:
                data = ahead.result()
                continue
            if ahead is not None:
                log.warning("list_read_ahead_dropped", resource=resource)
                with contextlib.suppress(Exception):
                    ahead.result()
            if not token:
                return Relist(resource, items, version, time.monotonic())
            data = fetch(token)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


# `"continue": "<token>"` in a list's metadata (JSON string escapes allowed in the token).
_CONTINUE = re.compile(rb'"continue"\s*:\s*"((?:[^"\\]|\\.)*)"')
_HEAD_BYTES = 4096


def peek_continue(page: bytes) -> str | None:
    """The continue token of a list page, read from the metadata before its items, or None
    (no token there, or the page does not start with its metadata)."""
    head = page[:_HEAD_BYTES]
    items_at = head.find(b'"items"')
    match = _CONTINUE.search(head if items_at < 0 else head[:items_at])
    if match is None:
        return None
    try:
        token = json.loads(b'"' + match.group(1) + b'"')
    except ValueError:
        return None
    return token if isinstance(token, str) and token else None


def threadsafe_delivery(
    loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[WatchEvent | Relist]
) -> Delivery:
    def deliver(item: WatchEvent | Relist) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    return deliver
