"""The agent's standing, after each pass: the managed-pods and quarantined-pods gauges, and
readiness (`/readyz`).

Readiness means: every initial LIST is done and every local pod known (with an IP) at that
moment has been programmed once, or has failed `READINESS_ATTEMPTS` times, or is gone. A
rollout waits on it, so it must neither pass before the node is enforced nor hang forever on
one pod whose namespace never appears.
"""

from __future__ import annotations

import collections
from collections.abc import Collection, Mapping

import structlog

from agent import metrics
from agent.sync import pod as sync_pod

log = structlog.get_logger(__name__)

READINESS_ATTEMPTS = 3


def update_gauges(pods: Mapping[str, sync_pod.PodState]) -> None:
    counts = collections.Counter(state.state for state in pods.values())
    for status in sync_pod.Status:
        metrics.MANAGED_PODS.labels(status.value).set(counts.get(status, 0))
    quarantined = collections.Counter(
        key.split("/", 1)[0] for key, s in pods.items() if s.quarantined_since is not None
    )
    metrics.QUARANTINED_PODS.clear()
    for namespace, count in quarantined.items():
        metrics.QUARANTINED_PODS.labels(namespace).set(count)


class Readiness:
    def __init__(self) -> None:
        self.ready = False
        self.initial: set[str] | None = None  # local pods with an IP at the first pass

    def first_pass(self, local_with_ips: Collection[str]) -> None:
        if self.initial is None:
            self.initial = set(local_with_ips)

    def update(self, pods: Mapping[str, sync_pod.PodState], cluster_pods: Collection[str]) -> None:
        if self.ready or self.initial is None:
            return
        pending = [
            key
            for key in self.initial
            if key in pods
            and pods[key].fingerprint is None
            and pods[key].failures < READINESS_ATTEMPTS
            and key in cluster_pods
        ]
        if pending:
            return
        self.ready = True
        metrics.AGENT_READY.set(1)
        counts = collections.Counter(state.state.value for state in pods.values())
        log.info("agent_ready", local_pods=len(pods), **dict(counts))
