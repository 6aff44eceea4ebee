"""HTTP layer: maps kube-apiserver URLs, verbs and query parameters onto the Registry.

Also streams watches: chunked ``application/json`` with one ``{"type":..,"object":..}`` line
per event, flushed per event, with optional BOOKMARKs, ``timeoutSeconds`` and 410 Expired.
Faults (see faults.py) are applied by a middleware before any /api or /apis handler runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp.web
import msgspec
import structlog

from testbed.emulator import (
    apistatus,
    discovery,
    faults,
    patching,
    queryselectors,
    registry,
    resources,
    watchcache,
)

log = structlog.get_logger()

Handler = Callable[[aiohttp.web.Request], Awaitable[aiohttp.web.StreamResponse]]
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
_STATUS_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Expired",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def json_response(obj: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.json_response(obj, status=status, dumps=dumps)


def list_response(body: dict[str, Any]) -> aiohttp.web.Response:
    """A LIST's answer, encoded with msgspec rather than `json`: a real kube-apiserver serves a
    LIST from its watch cache in Go, and Python's encoder made the emulator's serving of
    10,000 realistic pods (68 MB of JSON) the larger part of an agent's cold start
    (docs/benchmarks/2026-12-06-churn-and-memory.md). The same JSON values as `dumps`; the
    bytes differ only in non-ASCII text (UTF-8 rather than escapes) and in what no API object
    holds (NaN)."""
    return aiohttp.web.Response(
        body=msgspec.json.encode(body), content_type="application/json", charset="utf-8"
    )


def error_response(err: apistatus.ApiError) -> aiohttp.web.Response:
    return json_response(err.status(), status=err.code)


@dataclasses.dataclass(frozen=True)
class Target:
    """A parsed resource URL."""

    rt: resources.ResourceType
    namespace: str | None  # None: all namespaces (or a cluster-scoped resource)
    name: str | None
    subresource: str | None


def resolve(catalogue: resources.Catalogue, group: str, version: str, tail: str) -> Target:
    segs = [s for s in tail.split("/") if s != ""]
    if not segs:
        raise apistatus.unknown_path()
    ns: str | None = None
    rt: resources.ResourceType | None = None
    if segs[0] == "namespaces" and len(segs) >= 3:
        candidate = catalogue.lookup(group, version, segs[2])
        if candidate is not None and candidate.namespaced:
            rt, ns, rest = candidate, segs[1], segs[3:]
    if rt is None:
        rt = catalogue.lookup(group, version, segs[0])
        rest = segs[1:]
        if rt is None or (rt.namespaced and rest):
            raise apistatus.unknown_path()
    if len(rest) > 2:
        raise apistatus.unknown_path()
    name = rest[0] if rest else None
    sub = rest[1] if len(rest) > 1 else None
    if sub is not None and sub not in rt.subresources:
        raise apistatus.unknown_path()
    return Target(rt, ns, name, sub)


def _int_param(query: Any, key: str) -> int | None:
    raw = query.get(key)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise apistatus.bad_request(f"invalid value for {key}: {raw!r}") from exc
    if value < 0:
        raise apistatus.bad_request(f"invalid value for {key}: {raw!r}")
    return value


def _flag(query: Any, key: str) -> bool:
    return str(query.get(key, "")).lower() in ("true", "1")


def build_filter(target: Target, query: Any) -> watchcache.Filter:
    rt = target.rt
    try:
        labels = queryselectors.parse_label_selector(query.get("labelSelector", ""))
        fields = queryselectors.parse_field_selector(query.get("fieldSelector", ""))
    except queryselectors.SelectorError as exc:
        raise apistatus.bad_request(str(exc)) from exc
    allowed = {"metadata.name", *rt.field_labels}
    if rt.namespaced:
        allowed.add("metadata.namespace")
    for field in sorted(fields.fields()):
        if field not in allowed:
            raise apistatus.bad_request(f"field label not supported: {field}")
    namespace = target.namespace if rt.namespaced else None
    return watchcache.Filter(rt, namespace, labels, fields)


async def _read_json(request: aiohttp.web.Request, *, optional: bool = False) -> Any:
    raw = await request.read()
    if not raw.strip():
        if optional:
            return None
        raise apistatus.bad_request("the request body is empty")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise apistatus.bad_request(f"couldn't get version/kind; json parse error: {exc}") from exc


class Api:
    """The aiohttp handlers; one instance per Emulator."""

    def __init__(
        self,
        reg: registry.Registry,
        fault_settings: faults.Faults,
        bookmark_interval: float,
    ) -> None:
        self.registry = reg
        self.faults = fault_settings
        self.bookmark_interval = bookmark_interval

    def install(self, app: aiohttp.web.Application) -> None:
        app.middlewares.append(self._middleware)
        add = app.router.add_route
        for path in ("/healthz", "/readyz", "/livez"):
            add("GET", path, self._ok)
        add("GET", "/version", self._version)
        add("GET", "/api", self._api)
        add("GET", "/api/", self._api)
        add("GET", "/apis", self._apis)
        add("GET", "/apis/", self._apis)
        add("GET", "/api/v1", self._core_resources)
        add("GET", "/api/v1/", self._core_resources)
        add("*", "/api/v1/{tail:.+}", self._core)
        add("GET", "/apis/{group}", self._group)
        add("GET", "/apis/{group}/", self._group)
        add("GET", "/apis/{group}/{version}", self._group_resources)
        add("GET", "/apis/{group}/{version}/", self._group_resources)
        add("*", "/apis/{group}/{version}/{tail:.+}", self._grouped)

    @aiohttp.web.middleware
    async def _middleware(
        self, request: aiohttp.web.Request, handler: Handler
    ) -> aiohttp.web.StreamResponse:
        api = request.path.startswith(("/api/", "/apis/")) or request.path in ("/api", "/apis")
        if api and self.faults.latency > 0:
            await asyncio.sleep(self.faults.latency)
        if api and self.faults.error_status is not None:
            code = self.faults.error_status
            reason = _STATUS_REASONS.get(code, "InternalError")
            return error_response(apistatus.ApiError(code, reason, f"injected fault: {reason}", {}))
        try:
            return await handler(request)
        except apistatus.ApiError as err:
            return error_response(err)
        except aiohttp.web.HTTPException as exc:
            if exc.status == 404:
                return error_response(apistatus.unknown_path())
            if exc.status == 405:
                return error_response(apistatus.method_not_allowed())
            raise
        except Exception as exc:  # a bug in the emulator: answer like the server would
            log.exception("emulator.handler_error", path=request.path, method=request.method)
            return error_response(apistatus.internal(f"emulator error: {exc!r}"))

    # --- discovery ------------------------------------------------------------------------

    async def _ok(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        return aiohttp.web.Response(text="ok", content_type="text/plain")

    async def _version(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        return json_response(discovery.VERSION_INFO)

    async def _api(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        return json_response(discovery.api_versions(request.host))

    async def _apis(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        return json_response(discovery.api_group_list(self.registry.store.catalogue))

    async def _core_resources(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        body = discovery.api_resource_list(self.registry.store.catalogue, "", "v1")
        return json_response(body)

    async def _group(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        body = discovery.api_group(self.registry.store.catalogue, request.match_info["group"])
        if body is None:
            raise apistatus.unknown_path()
        return json_response(body)

    async def _group_resources(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        info = request.match_info
        catalogue = self.registry.store.catalogue
        body = discovery.api_resource_list(catalogue, info["group"], info["version"])
        if body is None:
            raise apistatus.unknown_path()
        return json_response(body)

    # --- resources ------------------------------------------------------------------------

    async def _core(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        target = resolve(self.registry.store.catalogue, "", "v1", request.match_info["tail"])
        return await self._dispatch(request, target)

    async def _grouped(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        info = request.match_info
        catalogue = self.registry.store.catalogue
        target = resolve(catalogue, info["group"], info["version"], info["tail"])
        return await self._dispatch(request, target)

    async def _dispatch(
        self, request: aiohttp.web.Request, target: Target
    ) -> aiohttp.web.StreamResponse:
        method = request.method
        reg = self.registry
        if method != "GET" and request.query.get("dryRun"):
            # Refuse loudly rather than persist a write the caller meant as a dry run.
            raise apistatus.bad_request("dryRun is not supported by the podseg API emulator")
        rt = target.rt
        ns = target.namespace or ""
        if target.name is None:
            if method == "GET":
                flt = build_filter(target, request.query)
                if _flag(request.query, "watch"):
                    return await self._watch(request, flt)
                limit = _int_param(request.query, "limit")
                token = request.query.get("continue") or None
                return list_response(reg.list(flt, limit, token))
            if method == "POST":
                if rt.namespaced and target.namespace is None:
                    raise apistatus.method_not_allowed()
                return json_response(reg.create(rt, ns, await _read_json(request)), 201)
            if method == "DELETE":
                if rt.namespaced and target.namespace is None:
                    raise apistatus.method_not_allowed()
                return json_response(reg.delete_collection(build_filter(target, request.query)))
            raise apistatus.method_not_allowed()
        name = target.name
        sub = target.subresource
        if method == "GET":
            return json_response(reg.get(rt, ns, name))
        if method == "PUT":
            return json_response(reg.replace(rt, ns, name, await _read_json(request), sub))
        if method == "PATCH":
            content_type = request.content_type
            if content_type not in patching.SUPPORTED:
                raise apistatus.unsupported_media_type(content_type)
            body = await _read_json(request)
            return json_response(reg.patch(rt, ns, name, content_type, body, sub))
        if method == "DELETE" and sub is None:
            options = await _read_json(request, optional=True)
            return json_response(reg.delete(rt, ns, name, options))
        raise apistatus.method_not_allowed()

    # --- watch ----------------------------------------------------------------------------

    async def _watch(
        self, request: aiohttp.web.Request, flt: watchcache.Filter
    ) -> aiohttp.web.StreamResponse:
        query = request.query
        store = self.registry.store
        timeout = _int_param(query, "timeoutSeconds")
        bookmarks = _flag(query, "allowWatchBookmarks")
        send_initial = _flag(query, "sendInitialEvents")
        rv_text = query.get("resourceVersion", "")
        watcher = watchcache.Watcher(flt)
        initial: list[tuple[str, dict[str, Any]]] = []
        expired: apistatus.ApiError | None = None
        # Everything up to add_watcher runs without awaiting, so no write can slip between
        # the snapshot/history replay and the registration of the live queue.
        if rv_text in ("", "0") or send_initial:
            initial = [
                (watchcache.ADDED, resources.present(flt.rt, obj))
                for obj in store.items(flt.rt, flt.namespace)
            ]
            initial = [(t, o) for t, o in initial if flt.matches(o)]
            store.add_watcher(watcher)
        else:
            try:
                since = int(rv_text)
            except ValueError as exc:
                raise apistatus.bad_request(f"invalid resource version: {rv_text!r}") from exc
            if since < store.compacted_rv:
                expired = apistatus.expired(since, store.compacted_rv + 1)
            else:
                for event in store.events_after(since):
                    translated = watcher.translate(event)
                    if translated is not None:
                        initial.append(translated)
                store.add_watcher(watcher)
        initial_rv = store.rv
        resp = aiohttp.web.StreamResponse(status=200)
        resp.content_type = "application/json"
        resp.enable_chunked_encoding()
        try:
            await resp.prepare(request)
            if expired is not None:
                await _send(resp, watchcache.ERROR, expired.status())
                await resp.write_eof()
                return resp
            for kind, obj in initial:
                await _send(resp, kind, obj)
            if send_initial and bookmarks:
                await _send(resp, watchcache.BOOKMARK, self._bookmark(flt.rt, initial_rv, True))
            await self._pump(resp, watcher, timeout, bookmarks)
            await resp.write_eof()
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass  # the client went away
        finally:
            store.remove_watcher(watcher)
        return resp

    async def _pump(
        self,
        resp: aiohttp.web.StreamResponse,
        watcher: watchcache.Watcher,
        timeout: int | None,
        bookmarks: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        next_bookmark = loop.time() + self.bookmark_interval if bookmarks else None
        store = self.registry.store
        while True:
            watcher.wakeup.clear()
            while watcher.pending:
                translated = watcher.translate(watcher.pending.popleft())
                if translated is not None:
                    await _send(resp, *translated)
            if watcher.closed:
                return
            now = loop.time()
            if deadline is not None and now >= deadline:
                return
            if next_bookmark is not None and now >= next_bookmark:
                # The queue is drained, so every event up to store.rv has been delivered.
                await _send(resp, watchcache.BOOKMARK, self._bookmark(watcher.filter.rt, store.rv))
                next_bookmark = now + self.bookmark_interval
                continue
            waits = [t - now for t in (deadline, next_bookmark) if t is not None]
            try:
                async with asyncio.timeout(min(waits) if waits else None):
                    await watcher.wakeup.wait()
            except TimeoutError:
                pass

    @staticmethod
    def _bookmark(rt: resources.ResourceType, rv: int, initial_end: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {INITIAL_EVENTS_END: "true"}
        return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}


async def _send(resp: aiohttp.web.StreamResponse, kind: str, obj: dict[str, Any]) -> None:
    await resp.write((dumps({"type": kind, "object": obj}) + "\n").encode())
