"""Sets the quarantine label on a pod through the API server, idempotently. Effectful edge.

Only two API calls, matching the responder's RBAC (get and patch on pods): read the pod; if it
is the pod the finding is about (its UID) and not quarantined yet, send a JSON merge patch that
carries the UID and resourceVersion it read, so a pod changed in between (or quarantined by a
second responder replica) gives 409 and is read again instead of being patched twice, and a
pod replaced by a same-named successor in between is refused by the API server. The calls
block (the official client), so the HTTP app runs `Patcher.quarantine` in a thread.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
from collections.abc import Callable
from typing import Any

import kubernetes.client
import urllib3.exceptions

from agent.responder import findings

MERGE_PATCH = "application/merge-patch+json"
MAX_ATTEMPTS = 5


class Outcome(enum.Enum):
    QUARANTINED = "quarantined"
    UNCHANGED = "unchanged"
    DRY_RUN = "dry_run"
    UNKNOWN_POD = "unknown_pod"
    REPLACED = "replaced"  # the pod of that name is not the one the finding is about


@dataclasses.dataclass(frozen=True)
class Result:
    outcome: Outcome
    resource_version: str = ""
    patch: dict[str, Any] | None = None
    attempts: int = 1
    uid: str = ""  # the UID of the pod read under the finding's name


class ApiFailure(Exception):
    """The API server refused or could not be reached; nothing was changed by this request."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Patcher:
    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        *,
        dry_run: bool = False,
        timeout: float = 10.0,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self._core = kubernetes.client.CoreV1Api(api)
        self._dry_run = dry_run
        self._timeout = (min(5.0, timeout), timeout)
        self.clock = clock

    def quarantine(self, finding: findings.Finding) -> Result:
        """The pod the finding is about is the one with its UID, or (without one) the one
        first read under its name: a same-named successor, there from the start or created
        between a read and the patch, is REPLACED and never patched."""
        expected = finding.uid
        for attempt in range(1, MAX_ATTEMPTS + 1):
            pod = self._read(finding.namespace, finding.pod)
            if pod is None:
                return Result(Outcome.UNKNOWN_POD, attempts=attempt)
            meta = pod.get("metadata") or {}
            rv = str(meta.get("resourceVersion", ""))
            uid = str(meta.get("uid", ""))
            expected = expected or uid
            if uid != expected:
                return Result(Outcome.REPLACED, rv, attempts=attempt, uid=uid)
            if findings.is_quarantined(meta.get("labels")):
                return Result(Outcome.UNCHANGED, rv, attempts=attempt, uid=uid)
            body = findings.quarantine_patch(finding, self.clock(), rv, uid)
            if self._dry_run:
                return Result(Outcome.DRY_RUN, rv, body, attempts=attempt, uid=uid)
            try:
                patched = self._call(
                    self._core.patch_namespaced_pod,
                    finding.pod,
                    finding.namespace,
                    body,
                    _content_type=MERGE_PATCH,
                )
            except kubernetes.client.ApiException as exc:
                if exc.status == 409:
                    continue  # changed since we read it: read again and decide again
                if exc.status == 404:
                    return Result(Outcome.UNKNOWN_POD, attempts=attempt)
                raise _failure("patch", exc) from exc
            new_rv = str((patched.get("metadata") or {}).get("resourceVersion", ""))
            return Result(Outcome.QUARANTINED, new_rv, body, attempts=attempt, uid=uid)
        raise ApiFailure(f"the pod kept changing: {MAX_ATTEMPTS} conflicting updates in a row")

    def _read(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call(self._core.read_namespaced_pod, name, namespace)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise _failure("get", exc) from exc

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            response = fn(*args, _preload_content=False, _request_timeout=self._timeout, **kwargs)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiFailure(f"API server unreachable: {exc}") from exc
        try:
            data = json.loads(response.data)
        except ValueError as exc:
            raise ApiFailure(f"API server sent a body that is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ApiFailure("API server sent a body that is not an object")
        return data


def _failure(verb: str, exc: kubernetes.client.ApiException) -> ApiFailure:
    message = str(exc.reason or "")
    try:
        status_body = json.loads(exc.body or "")
        if isinstance(status_body, dict) and status_body.get("message"):
            message = str(status_body["message"])
    except ValueError:
        pass
    hint = (
        " (the responder's ServiceAccount needs get and patch on pods)" if exc.status == 403 else ""
    )
    return ApiFailure(f"{verb} pod failed: HTTP {exc.status}: {message}{hint}", exc.status)
