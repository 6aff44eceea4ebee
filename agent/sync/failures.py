"""What a pod's failure means: which error it was (counted by kind in
`podseg_apply_errors_total`), the pod's new status, its retry with backoff, and one log line
(not one per retry).

Why apart: the failure policy is a contract (docs/architecture.md, explicit failure policy):
one pod's failure never stops the others, never loses the pod (it is retried), and a namespace
that vanished makes the pod `unprotected` until it is found again.
"""

from __future__ import annotations

import time

import structlog

from agent import metrics
from agent.dataplane import protocol
from agent.sync import pod as sync_pod


def fail(
    state: sync_pod.PodState,
    status: sync_pod.Status,
    error: str,
    bound: structlog.typing.FilteringBoundLogger,
) -> None:
    """Mark the pod failed with `status`, to be retried with backoff."""
    if state.fail(status, error, time.monotonic()):
        bound.warning("pod_not_enforced", state=status.value, error=error, attempt=state.failures)


def record(
    state: sync_pod.PodState, bound: structlog.typing.FilteringBoundLogger, exc: Exception
) -> bool:
    """Count, log and schedule the retry of a pod whose work failed with `exc`. True when its
    namespace is gone (the caller stops watching it)."""
    if isinstance(exc, protocol.NetnsGone):
        metrics.APPLY_ERRORS.labels("netns_gone").inc()
        state.slots.clear()  # placed again (a scan) at its retry
        fail(state, sync_pod.Status.UNPROTECTED, str(exc), bound)
        return True
    if isinstance(exc, protocol.WorkerTimeout):
        metrics.APPLY_ERRORS.labels("timeout").inc()
        fail(state, sync_pod.Status.FAILED, str(exc), bound)
    elif isinstance(exc, protocol.ApplyFailed):
        metrics.APPLY_ERRORS.labels("nft").inc()
        fail(state, sync_pod.Status.FAILED, str(exc), bound)
    else:
        metrics.APPLY_ERRORS.labels("internal").inc()
        bound.error(
            "reconcile_pod_crashed",
            error=f"{type(exc).__name__}: {exc}",
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        fail(state, sync_pod.Status.FAILED, f"{type(exc).__name__}: {exc}", bound)
    return False


def unlocated(
    state: sync_pod.PodState, ips: tuple[str, ...], bound: structlog.typing.FilteringBoundLogger
) -> None:
    """No namespace holds the pod's IPs: counted, `unprotected`, retried."""
    metrics.NETNS_LOOKUP_FAILURES.inc()
    fail(state, sync_pod.Status.UNPROTECTED, f"no namespace holds {ips}", bound)
