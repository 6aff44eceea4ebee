"""Watches the network-policy-api kinds only while the cluster serves their CRDs.

ClusterNetworkPolicy, AdminNetworkPolicy and BaselineAdminNetworkPolicy are custom resources:
a cluster without their CRDs answers 404 to every LIST, and a reflector would back off and
warn forever (and fail readiness). So the agent reads the group's discovery documents at start
and then periodically (and at once when an admin reflector gets a 404): a kind that appears gets
a reflector (the store counts its first LIST towards being in sync); a kind that disappears has
its reflector stopped and its policies dropped from the store. A cluster without the CRDs costs
one info line and a discovery GET a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from agent import metrics, store
from agent.k8s import apiclient, errors, rest, watch

log = structlog.get_logger(__name__)

NOT_FOUND = 404
FORBIDDEN = 403
PERIOD = 60.0  # seconds between discovery checks
RETRY = 5.0  # seconds before the next check after a failed one

# A discovery GET: the decoded document, None when the server answers 404; raises otherwise.
Get = Callable[[str], Any]


def served(get: Get) -> frozenset[str]:
    """The admin kinds (`rest.ADMIN_VERSIONS` keys) the server serves at the version the agent
    reads, from the group document and the resource list of each such version it lists."""
    group = get(rest.ADMIN_DISCOVERY)
    if not isinstance(group, Mapping):
        return frozenset()
    listed = {v.get("version") for v in group.get("versions") or () if isinstance(v, Mapping)}
    out: set[str] = set()
    for version, path in rest.ADMIN_DISCOVERY_VERSIONS.items():
        if version not in listed:
            continue
        doc = get(path)
        names = {
            r.get("name")
            for r in (doc.get("resources") or () if isinstance(doc, Mapping) else ())
            if isinstance(r, Mapping)
        }
        out |= {k for k, v in rest.ADMIN_VERSIONS.items() if v == version and k in names}
    return frozenset(out)


def api_get(api: rest.Api) -> Get:
    """`Get` through the agent's declared routes (agent.k8s.rest)."""

    def get(path: str) -> Any:
        try:
            response = rest.call(api, "GET", path, timeout=(5, 10))
        except apiclient.ApiError as exc:
            if exc.status == NOT_FOUND:
                return None
            raise
        try:
            return json.loads(response.data)
        finally:
            response.release_conn()

    return get


MakeReflector = Callable[[str, Callable[[int | None], None]], watch.Reflector]


class AdminWatch:
    """Keeps one reflector per served admin kind in `reflectors` (the agent's list, so
    shutdown and readiness cover them). Runs on the event loop; discovery GETs in a thread."""

    def __init__(
        self,
        get: Get,
        cluster: store.Store,
        reflectors: list[watch.Reflector],
        make_reflector: MakeReflector,
        deliver: watch.Delivery,
        *,
        period: float = PERIOD,
        retry: float = RETRY,
    ) -> None:
        self.get = get
        self.cluster = cluster
        self.reflectors = reflectors
        self.make_reflector = make_reflector
        self.deliver = deliver
        self.period = period
        self.retry = retry
        self.active: dict[str, watch.Reflector] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failing = False
        self._reported: frozenset[str] | None = None  # the kinds last logged as not served
        self._served: frozenset[str] = frozenset()  # what the last discovery said
        # Served kinds the agent may not list (its ClusterRole lacks them): left out until the
        # next discovery, so they never hold the store out of sync; warned about once.
        self._forbidden: set[str] = set()
        self._forbidden_logged: set[str] = set()

    def start(self) -> None:
        """Before `run`, on the event loop: until a discovery succeeds the store is not in sync
        (a cluster whose admin policies cannot be known yet must not look fully enforced)."""
        self._loop = asyncio.get_running_loop()
        self.cluster.admin_known = False

    async def run(self) -> None:
        """The first discovery at once (the admin kinds' LISTs start right after it), then a
        check every `period` (every `retry` while it fails), or when woken."""
        await self.refresh()
        while True:
            delay = self.retry if self._failing else self.period
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            await self.refresh()

    async def refresh(self) -> bool:
        """One discovery round; False when the server could not say (nothing changes)."""
        try:
            kinds = await asyncio.to_thread(served, self.get)
        except Exception as exc:
            metrics.API_ERRORS.labels("discovery").inc()
            if not self._failing:
                log.warning(
                    "admin_discovery_failed",
                    group=rest.ADMIN_GROUP,
                    error=errors.describe(exc),
                    effect="admin kinds stay as they were; retrying",
                    retry_in=self.retry,
                )
            self._failing = True
            return False
        self._failing = False
        self._forbidden.clear()  # retried: the role may have been fixed
        self.apply(kinds)
        return True

    def apply(self, served_kinds: frozenset[str]) -> None:
        """Start reflectors for newly served kinds, stop and drop those no longer served."""
        self._served = served_kinds
        kinds = served_kinds - self._forbidden
        for resource in store.ADMIN_KINDS:
            quiet = resource in self._forbidden_logged  # a retry of a forbidden kind
            if resource in kinds and resource not in self.active:
                self.cluster.expect_admin(resource)
                failed = functools.partial(self._reflector_failed, resource)
                reflector = self.make_reflector(resource, failed)
                self.active[resource] = reflector
                self.reflectors.append(reflector)
                reflector.start()
                (log.debug if quiet else log.info)(
                    "admin_kind_watched",
                    resource=resource,
                    api_version=f"{rest.ADMIN_GROUP}/{rest.ADMIN_VERSIONS[resource]}",
                )
            elif resource not in kinds and resource in self.active:
                reflector = self.active.pop(resource)
                reflector.stop()
                with contextlib.suppress(ValueError):
                    self.reflectors.remove(reflector)
                self.cluster.forget_admin(resource)
                # An empty relist wakes the reconciler, which drops the kind's policies.
                self.deliver(watch.Relist(resource, [], "", time.monotonic()))
                if resource not in self._forbidden:
                    log.info(
                        "admin_kind_not_served_any_more",
                        resource=resource,
                        effect="watch stopped; its policies are dropped",
                    )
        first = not self.cluster.admin_known
        self.cluster.admin_known = True
        missing = frozenset(store.ADMIN_KINDS) - served_kinds
        if first and missing == frozenset(store.ADMIN_KINDS):
            # The initial LISTs may all be done already: with no admin reflector to deliver
            # anything, an empty relist of an unserved kind wakes the reconciler, which finds
            # the store in sync now (it changes nothing).
            self.deliver(watch.Relist(store.ADMIN_KINDS[0], [], "", time.monotonic()))
        if missing and missing != self._reported:
            log.info(
                "admin_kinds_not_served",
                group=rest.ADMIN_GROUP,
                kinds=sorted(missing),
                effect="not watched; discovery is checked again periodically",
                period_s=self.period,
            )
        self._reported = missing

    def _reflector_failed(self, resource: str, code: int | None) -> None:
        """From a reflector's thread: a 404 may mean the CRD is gone (check now); a 403 means
        the agent may not list the kind (leave it out until the next discovery)."""
        loop = self._loop
        if loop is None:
            return
        if code == NOT_FOUND:
            loop.call_soon_threadsafe(self._wake.set)
        elif code == FORBIDDEN:
            loop.call_soon_threadsafe(self._forbid, resource)

    def _forbid(self, resource: str) -> None:
        if resource not in self.active or resource in self._forbidden:
            return
        if resource not in self._forbidden_logged:
            self._forbidden_logged.add(resource)
            log.warning(
                "admin_kind_forbidden",
                resource=resource,
                effect="not enforced; grant list and watch on it (deploy/rbac.yaml); "
                "tried again at each discovery check",
            )
        self._forbidden.add(resource)
        self.apply(self._served)
