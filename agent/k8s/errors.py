"""Classifying API failures: which ones mean "relist", which ones mean "back off and retry"."""

from __future__ import annotations

from agent.k8s import apiclient


class Expired(Exception):
    """The watch's resourceVersion is too old (HTTP 410 / ERROR event): relist."""


def status_code(exc: BaseException) -> int | None:
    if isinstance(exc, apiclient.ApiError):
        return int(exc.status) if exc.status else None
    return None


def describe(exc: BaseException) -> str:
    code = status_code(exc)
    if code is not None:
        reason = getattr(exc, "reason", "") or ""
        return f"HTTP {code} {reason}".strip()
    return f"{type(exc).__name__}: {exc}"
