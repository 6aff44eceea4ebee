"""The responder's HTTP service: POST /findings/{falco,wiz,generic}, GET /healthz, /metrics.

Each request: the client address's rate (429 with Retry-After), the bearer token (401), a body
that is UTF-8 JSON at most 32 levels deep (400), the source's parser (400 on wrong types), the
decision (202 "ignored" with why), a pod name check (400), a protected namespace (403, before
any API call), then the patcher in a thread (404 unknown pod, 409 "replaced" when the pod of
that name is not the finding's (its UID), 200 "quarantined" / "unchanged" / "dry-run", 502 on
API failure); a body slower than --body-timeout is 408. Every decision is one audit log line
(`responder.decision`; a rate-limited client's at most once a second) and one count in
`podseg_responder_findings_total{source,outcome}`. Connections: see `connections`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import math
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp.web
import prometheus_client
import structlog

from agent import metrics
from agent.k8s import clients
from agent.responder import (
    auth,
    connections,
    falco,
    findings,
    generic,
    patcher,
    ratelimit,
    settings,
    wiz,
)

_log = structlog.get_logger(__name__)

PARSERS: dict[str, Callable[[Any], findings.Finding]] = {
    falco.SOURCE: falco.parse,
    wiz.SOURCE: wiz.parse,
    generic.SOURCE: generic.parse,
}


MAX_DEPTH = 32
# After an early answer (401, 413, 429) aiohttp reads what is left of the body this long, so
# the client sees the answer rather than a reset; a slow client is cut off after it.
LINGERING_SECONDS = 2.0


class StartupError(Exception):
    """The responder cannot start: token, credentials or port."""


class Responder:
    def __init__(
        self, config: settings.Settings, token: auth.TokenFile, patch: patcher.Patcher
    ) -> None:
        self.config = config
        self.token = token
        self.patcher = patch
        self.port = config.port
        self.limiter = ratelimit.TokenBuckets(config.rate_limit, config.rate_burst)
        self.connections = connections.ConnectionCap(config.max_connections)
        self._runner: aiohttp.web.AppRunner | None = None

    def application(self) -> aiohttp.web.Application:
        app = aiohttp.web.Application(
            client_max_size=self.config.max_body_bytes, middlewares=[_last_resort]
        )
        app.router.add_post("/findings/{source}", self._finding)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self) -> None:
        # aiohttp's keep-alive timeout runs from a connection's start and from each answer,
        # and closes a connection still waiting for a complete request header when it ends.
        self._runner = aiohttp.web.AppRunner(
            self.application(),
            access_log=None,
            keepalive_timeout=self.config.header_timeout,
            lingering_time=LINGERING_SECONDS,
        )
        await self._runner.setup()
        site = connections.CappedSite(
            self._runner, self.config.host, self.config.port, self.connections
        )
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise StartupError(
                f"cannot listen on {self.config.host}:{self.config.port}: {exc}"
            ) from exc
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        policy = self.config.policy
        _log.info(
            "responder.started",
            host=self.config.host,
            port=self.port,
            min_severity=policy.min_severity.label if policy.min_severity else "none",
            rules=sorted(policy.rules),
            dry_run=self.config.dry_run,
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(text="ok\n")

    async def _metrics(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(
            body=metrics.exposition(metrics.RESPONDER_REGISTRY),
            headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST},
        )

    async def _finding(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        """One finding: received (`_receive`), admitted (`_admit`), applied (`_apply`); each
        step that says no raises `_Answered` with its answer."""
        started = time.monotonic()
        source = request.match_info["source"]
        audit: dict[str, Any] = {"source": source, "remote": request.remote or ""}
        try:
            finding = await self._receive(request, source, audit)
            verdict = self._admit(finding, audit)
            return await self._apply(finding, verdict, audit, started)
        except _Answered as answered:
            return answered.response

    async def _receive(
        self, request: aiohttp.web.Request, source: str, audit: dict[str, Any]
    ) -> findings.Finding:
        """The client's rate, the source, the token, the body, the parse."""
        refusal = self.limiter.take(audit["remote"])
        if refusal is not None:
            raise self._rate_limited(refusal, audit)
        if source not in PARSERS:
            raise _refuse(404, "unknown_source", f"no such finding source: {source!r}", audit)
        why_not = self.token.check(request.headers.get("Authorization"))
        if why_not:
            headers = {"WWW-Authenticate": 'Bearer realm="podseg-responder"'}
            raise _refuse(401, "unauthorized", why_not, audit, headers=headers)
        try:
            async with asyncio.timeout(self.config.body_timeout):
                raw = await request.read()
        except TimeoutError:
            message = f"the body did not arrive within {self.config.body_timeout:g} s"
            answered = _refuse(408, "timeout", message, audit)
            answered.response.force_close()
            raise answered from None
        except aiohttp.web.HTTPRequestEntityTooLarge:
            limit = self.config.max_body_bytes
            raise _refuse(413, "malformed", f"the body exceeds {limit} bytes", audit) from None
        except (ConnectionError, aiohttp.http.HttpProcessingError) as exc:
            # The client closed the connection mid-body, or its chunked framing broke: the
            # answer may reach nobody, but the audit line records the attempt.
            message = f"the body is incomplete or badly framed: {exc}"
            raise _refuse(400, "malformed", message, audit) from None
        try:
            finding = PARSERS[source](_json(raw))
        except findings.Malformed as exc:
            raise _refuse(400, "malformed", str(exc), audit) from None
        audit.update(_describe(finding))
        return finding

    def _rate_limited(self, refusal: ratelimit.Refusal, audit: dict[str, Any]) -> _Answered:
        seconds = max(1, math.ceil(refusal.retry_after))
        message = (
            f"too many findings from {audit['remote'] or 'this client'}: at most "
            f"{self.config.rate_limit:g} a second (bursts of {self.config.rate_burst}); "
            f"retry after {seconds} s"
        )
        if refusal.log and refusal.unlogged:
            audit = audit | {"unlogged_refusals": refusal.unlogged}
        headers = {"Retry-After": str(seconds)}
        return _refuse(429, "rate_limited", message, audit, headers=headers, log=refusal.log)

    def _admit(self, finding: findings.Finding, audit: dict[str, Any]) -> findings.Verdict:
        """The decision, then whether the pod it names may be touched at all."""
        verdict = findings.decide(finding, self.config.policy)
        if not verdict.act:
            raise _refuse(202, "ignored", verdict.why, audit)
        bad_name = findings.invalid_name(finding)
        if bad_name:
            raise _refuse(400, "malformed", bad_name, audit)
        if finding.namespace in self.config.protected_namespaces:
            message = (
                f"namespace {finding.namespace} is protected (--protected-namespaces): "
                f"its pods are never quarantined by a finding; nothing changed"
            )
            raise _refuse(403, "protected", message, audit)
        audit["decision"] = verdict.why
        return verdict

    async def _apply(
        self,
        finding: findings.Finding,
        verdict: findings.Verdict,
        audit: dict[str, Any],
        started: float,
    ) -> aiohttp.web.Response:
        try:
            result = await asyncio.to_thread(self.patcher.quarantine, finding)
        except patcher.ApiFailure as exc:
            return _answer(502, "error", f"nothing changed: {exc}", audit)
        audit["resource_version"] = result.resource_version
        audit["pod_uid"] = result.uid
        audit["seconds"] = round(time.monotonic() - started, 4)
        target = f"{finding.namespace}/{finding.pod}"
        if result.outcome is patcher.Outcome.UNKNOWN_POD:
            return _answer(404, "unknown_pod", f"no pod {target}; nothing changed", audit)
        if result.outcome is patcher.Outcome.REPLACED:
            about = f"UID {finding.uid}" if finding.uid else "the pod of that name first read"
            message = (
                f"{target} is now pod UID {result.uid}, a same-named successor of the pod the "
                f"finding is about ({about}); nothing changed"
            )
            return _answer(409, "replaced", message, audit)
        if result.outcome is patcher.Outcome.UNCHANGED:
            return _answer(200, "unchanged", f"{target} is already quarantined", audit)
        if result.outcome is patcher.Outcome.DRY_RUN:
            extra = {"would_patch": result.patch}
            message = (
                f"dry run: would set {findings.QUARANTINE_LABEL}={findings.QUARANTINE_VALUE} "
                f"on {target} ({verdict.why})"
            )
            return _answer(200, "dry_run", message, audit, extra)
        message = (
            f"{target} quarantined: {findings.QUARANTINE_LABEL}={findings.QUARANTINE_VALUE} "
            f"({verdict.why})"
        )
        return _answer(200, "quarantined", message, audit)


class _Answered(Exception):
    """A step of a finding's handling answered it (a refusal, 'ignored', ...)."""

    def __init__(self, response: aiohttp.web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _refuse(
    status: int,
    outcome: str,
    message: str,
    audit: dict[str, Any],
    headers: dict[str, str] | None = None,
    log: bool = True,
) -> _Answered:
    """The answer (its audit line and metric logged now) to raise from a step."""
    response = _answer(status, outcome, message, audit, log=log)
    response.headers.update(headers or {})
    return _Answered(response)


def _json(raw: bytes) -> Any:
    """The body as JSON: UTF-8 only (as RFC 8259 requires; `json.loads` alone would also take
    UTF-16 and encoded surrogates), at most MAX_DEPTH arrays or objects deep (no finding
    nests beyond four; Python's parser would recurse until RecursionError)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise findings.Malformed(f"the body is not UTF-8: {exc}") from None
    too_deep = f"the body is JSON nested deeper than {MAX_DEPTH} levels"
    try:
        value = json.loads(text)
    except RecursionError:
        raise findings.Malformed(too_deep) from None
    except ValueError as exc:
        raise findings.Malformed(f"the body is not JSON: {exc}") from None
    if _depth(value) > MAX_DEPTH:
        raise findings.Malformed(too_deep)
    return value


def _depth(value: Any) -> int:
    """How many arrays and objects deep `value` is (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item)
    return deepest


def _describe(finding: findings.Finding) -> dict[str, Any]:
    """The finding's fields for the audit line and the answer: each one line, bounded (a
    sender's text never spans lines of the log or grows it without limit)."""
    return {
        "namespace": findings.clean(finding.namespace, 253),
        "pod": findings.clean(finding.pod, 253),
        "rule": findings.clean(finding.rule, 200),
        "severity": finding.severity.label if finding.severity is not None else "",
        "reporter": findings.clean(finding.reporter, 200),
        "finding_id": findings.clean(finding.finding_id, 100),
        "finding_uid": finding.uid,
    }


@aiohttp.web.middleware
async def _last_resort(
    request: aiohttp.web.Request,
    handler: Callable[[aiohttp.web.Request], Awaitable[aiohttp.web.StreamResponse]],
) -> aiohttp.web.StreamResponse:
    """A bug must still answer with an audit line: 500 `error`, the traceback in the log."""
    try:
        return await handler(request)
    except aiohttp.web.HTTPException:
        raise
    except Exception:
        _log.exception("responder.unexpected_error", path=request.path)
        source = request.match_info.get("source", "")
        audit = {"source": source, "remote": request.remote or ""}
        return _answer(500, "error", "internal error (see the responder's log)", audit)


def _answer(
    status: int,
    outcome: str,
    message: str,
    audit: dict[str, Any],
    extra: dict[str, Any] | None = None,
    *,
    log: bool = True,
) -> aiohttp.web.Response:
    """The audit line (unless `log` is False: a rate-limited flood), the metric and the JSON
    answer of one decision."""
    source = audit["source"] if audit["source"] in PARSERS else "unknown"
    metrics.RESPONDER_FINDINGS.labels(source, outcome).inc()
    if log:
        level = _log.warning if status >= 500 or status in (401, 429) else _log.info
        level("responder.decision", outcome=outcome, status=status, message=message, **audit)
    body: dict[str, Any] = {"outcome": outcome.replace("_", "-"), "message": message}
    for key in ("namespace", "pod", "rule", "severity"):
        if audit.get(key):
            body[key] = audit[key]
    body.update(extra or {})
    return aiohttp.web.json_response(body, status=status)


def build(
    config: settings.Settings, clock: Callable[[], datetime.datetime] | None = None
) -> Responder:
    try:
        token = auth.TokenFile(config.token_file)
    except auth.TokenError as exc:
        raise StartupError(str(exc)) from exc
    try:
        api = clients.api_client(config.kubeconfig)
    except clients.CredentialsError as exc:
        raise StartupError(str(exc)) from exc
    patch = patcher.Patcher(api, dry_run=config.dry_run, timeout=config.api_timeout)
    if clock is not None:
        patch.clock = clock
    return Responder(config, token, patch)


async def run(config: settings.Settings) -> int:
    """Serve until SIGTERM/SIGINT; 0 on a clean stop."""
    responder = build(config)
    await responder.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
        await responder.stop()
        _log.info("responder.stopped")
    return 0
