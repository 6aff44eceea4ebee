"""Turns the store into kernel state: compile, render, skip-if-current, apply, per local pod.

Desired state depends only on the current snapshot (never on event order): each pass
recompiles the local pods from the store and applies a ruleset only when its fingerprint
differs from what is known to be in the pod's namespace. One pod's failure (namespace not
found yet, vanished, nft error, hung worker) is logged, counted and retried with backoff; it
never stops the pass for the other pods. Nothing is written before every initial LIST is done.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time

import structlog

from agent import config, metrics, model, store, sweep
from agent.dataplane import backend, backends, netns
from agent.k8s import events, watch
from agent.policy import affected as policy_affected
from agent.policy import compile as policy_compile

log = structlog.get_logger(__name__)

READINESS_ATTEMPTS = 3


@dataclasses.dataclass
class PodState:
    """What the agent knows about one local pod's namespace and rules."""

    key: str
    target: netns.Target | None = None
    target_ips: tuple[str, ...] = ()
    fingerprint: str | None = None
    digest: str | None = None  # of the kernel's whole stateless listing after our apply
    adopted: bool = False  # found in place at start: trusted by comment until first resync
    state: str = "unprotected"
    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""


class Reconciler:
    def __init__(
        self,
        settings: config.Settings,
        cluster: store.Store,
        dataplane: backend.WorkerClient,
        recorder: events.Recorder,
    ) -> None:
        self.settings = settings
        self.store = cluster
        self.dataplane = dataplane
        self.recorder = recorder
        self.pods: dict[str, PodState] = {}
        self.ready = False
        self._initial: set[str] | None = None
        self._reported_invalid: set[tuple[str, str]] = set()
        self._swept = False  # the first in-sync pass also sweeps leftover tables
        self.backend = backends.get(settings.backend)

    # -- which pods -----------------------------------------------------------------------
    def is_local(self, pod: model.Pod) -> bool:
        return pod.node_name == self.settings.node_name and not pod.host_network

    def local_pods(self) -> dict[str, model.Pod]:
        return {key: pod for key, pod in self.store.pods.items() if self.is_local(pod)}

    # -- main loop ------------------------------------------------------------------------
    async def run(self, queue: asyncio.Queue[watch.WatchEvent | watch.Relist]) -> None:
        next_resync = time.monotonic() + self.settings.resync_period
        while True:
            now = time.monotonic()
            wake_at = min([next_resync] + [s.retry_at for s in self.pods.values() if s.retry_at])
            batch: list[watch.WatchEvent | watch.Relist] = []
            with contextlib.suppress(TimeoutError):
                batch.append(await asyncio.wait_for(queue.get(), max(0.0, wake_at - now)))
            while not queue.empty():
                batch.append(queue.get_nowait())
            change = store.Change()
            for item in batch:
                self.store.apply(item, change)
            if not self.store.in_sync:
                continue
            verify = time.monotonic() >= next_resync
            if verify:
                next_resync = time.monotonic() + self.settings.resync_period
            since = min((item.received for item in batch), default=None)
            kind = batch[0].resource if batch else ("resync" if verify else "retry")
            await self.reconcile(change, since=since, kind=kind, verify=verify)

    async def reconcile(
        self,
        change: store.Change | None = None,
        *,
        since: float | None = None,
        kind: str = "",
        verify: bool = False,
    ) -> None:
        """One pass over every local pod; applies only what changed.

        With `verify` (the periodic resync), each pod's table is read back from the kernel:
        a table edited or flushed behind our back is restored (and counted as drift), and a
        namespace that vanished is noticed even when no API change touched its pod.
        """
        if change is None or change.policies or change.relisted:
            self._report_invalid_policies()
        local = self.local_pods()
        if self._initial is None:
            self._initial = {key for key, pod in local.items() if pod.ips}
        for key in set(self.pods) - set(local):
            await self._forget(self.pods.pop(key))
        index: netns.Index | None = None
        peers: policy_compile.ClusterIndex | None = None  # built once, only if a pod compiles
        targets = self._affected(local, change)
        now = time.monotonic()
        for key in sorted(local):
            pod = local[key]
            state = self.pods.setdefault(key, PodState(key))
            if not pod.ips:
                state.state = "unprotected"
                continue
            if state.retry_at > now and state.target_ips == pod.ips:
                continue
            current = state.fingerprint is not None and state.target_ips == pod.ips
            if current and not verify and targets is not None and key not in targets:
                continue  # nothing this pod's ruleset depends on changed
            bound = log.bind(pod=pod.name, namespace=pod.namespace)
            try:
                if state.target is None or state.target_ips != pod.ips:
                    if index is None:
                        index = netns.Index(
                            await self.dataplane.scan(
                                self.settings.netns_dir, self.settings.scan_proc
                            )
                        )
                    target = index.find(pod.ips)
                    if target is None:
                        metrics.NETNS_LOOKUP_FAILURES.inc()
                        self._failed(state, "unprotected", f"no namespace holds {pod.ips}", bound)
                        continue
                    state.target, state.target_ips, state.fingerprint = target, pod.ips, None
                if peers is None:
                    peers = policy_compile.build_index(
                        self.store.namespaces, self.store.pods.values()
                    )
                await self._program(pod, state, peers, since, kind, bound, verify)
            except backend.NetnsGone as exc:
                metrics.APPLY_ERRORS.labels("netns_gone").inc()
                state.target, state.fingerprint = None, None
                self._failed(state, "unprotected", str(exc), bound)
            except backend.WorkerTimeout as exc:
                metrics.APPLY_ERRORS.labels("timeout").inc()
                self._failed(state, "failed", str(exc), bound)
            except backend.ApplyFailed as exc:
                metrics.APPLY_ERRORS.labels("nft").inc()
                self._failed(state, "failed", str(exc), bound)
            except Exception as exc:  # one pod's surprise must not stop the others
                metrics.APPLY_ERRORS.labels("internal").inc()
                bound.exception("reconcile_pod_crashed")
                self._failed(state, "failed", f"{type(exc).__name__}: {exc}", bound)
        self._update_gauges()
        self._update_readiness()
        if verify or not self._swept:
            self._swept = True
            await self._sweep()

    async def _program(
        self,
        pod: model.Pod,
        state: PodState,
        peers: policy_compile.ClusterIndex,
        since: float | None,
        kind: str,
        bound: structlog.typing.FilteringBoundLogger,
        verify: bool = False,
    ) -> None:
        assert state.target is not None
        node = self.store.nodes.get(self.settings.node_name)
        ruleset = policy_compile.compile_indexed(
            pod,
            self.store.policies_in(pod.namespace),
            peers,
            node.addresses if node is not None else (),
        )
        rendered = self.backend.render(ruleset, state.target.interfaces)
        event = "ruleset_applied"
        if state.fingerprint is None or verify:
            current, digest = await self.backend.inspect(self.dataplane, state.target)
            if state.fingerprint is None:
                # First contact: an earlier agent may have left exactly this ruleset; adopt it.
                if current == rendered.fingerprint:
                    bound.info("ruleset_adopted", fingerprint=current)
                    state.fingerprint, state.digest, state.adopted = current, digest, True
            elif current != state.fingerprint or digest != state.digest:
                # Resync: the kernel no longer holds exactly what we committed.
                self._drift(pod, state, current, bound)
            elif state.adopted:
                # An adopted table was vouched for by its comment alone; rewrite it once
                # (atomically, no gap) so that from now on its digest is ours to compare.
                state.fingerprint, state.adopted, event = None, False, "ruleset_reverified"
        if state.fingerprint != rendered.fingerprint:
            started = time.monotonic()
            state.digest = await self.backend.apply(self.dataplane, state.target, rendered)
            state.adopted = False
            done = time.monotonic()
            metrics.APPLY_SECONDS.observe(done - started)
            metrics.APPLIES.inc()
            latency = None
            if since is not None:
                latency = done - since
                metrics.POLICY_PROGRAMMING_SECONDS.labels(kind or "unknown").observe(latency)
            bound.info(
                event,
                fingerprint=rendered.fingerprint,
                ingress_isolated=ruleset.ingress.isolated,
                egress_isolated=ruleset.egress.isolated,
                policies=sorted(set(ruleset.ingress.policies) | set(ruleset.egress.policies)),
                apply_ms=round((done - started) * 1000, 3),
                latency_ms=round(latency * 1000, 3) if latency is not None else None,
                trigger=kind,
            )
            state.fingerprint = rendered.fingerprint
        state.state, state.failures, state.retry_at, state.last_error = "enforced", 0, 0.0, ""

    def _drift(
        self,
        pod: model.Pod,
        state: PodState,
        current: str | None,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        metrics.RULESET_DRIFT.inc()
        what = "removed" if current is None else "edited"
        bound.warning("ruleset_drift", expected=state.fingerprint, found=current, change=what)
        self.recorder.warn(
            kind="Pod",
            api_version="v1",
            namespace=pod.namespace,
            name=pod.name,
            resource_version=pod.resource_version,
            reason="RulesetDrift",
            message=f"podseg rules in this pod's network namespace were {what} outside podseg "
            f"(found fingerprint {current or 'none'}, expected {state.fingerprint}); restored",
        )
        state.fingerprint, state.digest = None, None

    def _affected(
        self, local: dict[str, model.Pod], change: store.Change | None
    ) -> set[str] | None:
        if change is None:
            return None
        changes = policy_affected.Changes(
            pods={k: (old, self.store.pods.get(k)) for k, old in change.pods.items()},
            policies={k: (old, self.store.policies.get(k)) for k, old in change.policies.items()},
            namespaces_changed=bool(change.namespaces or change.nodes),
            relisted=change.relisted,
        )
        return policy_affected.affected(
            local, self.store.policies.values(), self.store.namespaces, changes
        )

    def _failed(
        self,
        state: PodState,
        status: str,
        error: str,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        state.state = status
        state.fingerprint = None  # unknown now: read it back before trusting it again
        state.failures += 1
        state.retry_at = time.monotonic() + min(0.1 * 2 ** min(state.failures, 9), 30.0)
        if error != state.last_error or state.failures in (1, 10, 100):
            bound.warning("pod_not_enforced", state=status, error=error, attempt=state.failures)
        state.last_error = error

    async def _sweep(self) -> None:
        """Delete podseg tables left in namespaces of pods that are gone (agent.sweep)."""
        tracked = {s.target.ino for s in self.pods.values() if s.target is not None}
        try:
            await sweep.run(
                self.dataplane,
                self.settings.netns_dir,
                self.settings.scan_proc,
                self.store.pods,
                tracked,
                self.backend,
            )
        except backend.DataplaneError as exc:
            metrics.APPLY_ERRORS.labels("sweep").inc()
            log.warning("sweep_failed", error=str(exc))

    async def _forget(self, state: PodState) -> None:
        if state.target is not None:
            try:
                await self.dataplane.forget([state.target.ino])
            except backend.DataplaneError as exc:
                log.warning("netns_release_failed", pod=state.key, error=str(exc))

    # -- reporting ------------------------------------------------------------------------
    def _report_invalid_policies(self) -> None:
        per_namespace: collections.Counter[str] = collections.Counter()
        for policy in self.store.policies.values():
            if not policy.errors:
                continue
            per_namespace[policy.namespace] += 1
            marker = (policy.key, policy.resource_version)
            if marker in self._reported_invalid:
                continue
            self._reported_invalid.add(marker)
            log.warning(
                "policy_invalid_parts",
                policy=policy.name,
                namespace=policy.namespace,
                errors=list(policy.errors),
                effect="invalid parts match nothing; valid parts are enforced",
            )
            self.recorder.warn(
                kind="NetworkPolicy",
                api_version="networking.k8s.io/v1",
                namespace=policy.namespace,
                name=policy.name,
                resource_version=policy.resource_version,
                reason="InvalidPolicy",
                message="podseg ignores invalid parts (they match nothing): "
                + "; ".join(policy.errors),
            )
        metrics.INVALID_POLICIES.clear()
        for namespace, count in per_namespace.items():
            metrics.INVALID_POLICIES.labels(namespace).set(count)

    def _update_gauges(self) -> None:
        counts = collections.Counter(state.state for state in self.pods.values())
        for name in ("enforced", "unprotected", "failed"):
            metrics.MANAGED_PODS.labels(name).set(counts.get(name, 0))

    def _update_readiness(self) -> None:
        if self.ready or self._initial is None:
            return
        pending = [
            key
            for key in self._initial
            if key in self.pods
            and self.pods[key].fingerprint is None
            and self.pods[key].failures < READINESS_ATTEMPTS
            and key in self.store.pods
        ]
        if not pending:
            self.ready = True
            counts = collections.Counter(state.state for state in self.pods.values())
            log.info("agent_ready", local_pods=len(self.pods), **dict(counts))
