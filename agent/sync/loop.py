"""Turns the store into kernel state: the event loop of the agent and its passes.

The loop takes API events in batches, applies them to the store, and runs a pass once every
initial LIST is done: the local pods the batch affects get their desired ruleset
(`agent.calc.desired`), rendered by the backend, and the kernel work of all of them runs in a
few batched dataplane round trips (`agent.sync.kernel`), deciding adopt / verify / patch /
replace per pod (`agent.sync.pod`). Then connections that became illegal are cut
(`agent.sync.cuts`), gauges and readiness updated (`agent.sync.status`), leftovers swept
(`agent.sync.sweep`). Periodically (resync) every pod's namespace is read back.

Desired state depends only on the current snapshot, never on event order. One pod's failure
(namespace not found yet, vanished, nft error, hung worker) is logged, counted and retried
with backoff; it never stops the pass for the other pods. Nothing is written before every
initial LIST is done.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Collection

import structlog

from agent import config, heap, metrics, model, store
from agent.calc import containment, incremental
from agent.dataplane import backends, netns, protocol
from agent.flows import collector as flows_collector
from agent.k8s import watch
from agent.sync import (
    cuts,
    eventkind,
    failures,
    holdover,
    indexes,
    kernel,
    report,
    status,
    sweep,
    tamper,
)
from agent.sync import pod as sync_pod

log = structlog.get_logger(__name__)

# A pass with more pods than this hands their kernel work to the worker in chunks of this
# many while it compiles the rest; a pass under it (most events) sends one batch.
PIPELINE_CHUNK = 16

Queue = asyncio.Queue[watch.WatchEvent | watch.Relist]


@dataclasses.dataclass
class Pass:
    """One pass's bookkeeping: what triggered it, when, and the plans it made."""

    kind: str
    since: float | None  # monotonic time the first event of the batch arrived
    verify: bool
    suspects: frozenset[str] = frozenset()  # pods whose namespace saw a stranger's commit
    started: float = dataclasses.field(default_factory=time.monotonic)
    compiled: float = 0.0
    plans: list[sync_pod.Plan] = dataclasses.field(default_factory=list)
    recompiled: int = 0

    def summarize(self) -> None:
        """Metrics and the pass's log line: from the first event of the batch being received
        to the last affected pod's rules being committed (what
        scripts/bench/time_to_enforce.py measures), and where that time went."""
        committed = collections.Counter(p.mode.value for p in self.plans if p.done and not p.failed)
        commits = [p.committed_at for p in self.plans if p.done and not p.failed]
        if not committed or self.since is None:
            return
        last = max(commits)
        metrics.PASS_SECONDS.labels(self.kind or "unknown").observe(last - self.since)
        log.info(
            "reconcile_committed",
            trigger=self.kind,
            pods=sum(committed.values()),
            patched=committed.get(sync_pod.Mode.PATCH.value, 0),
            recompiled=self.recompiled,
            latency_ms=round((last - self.since) * 1000, 3),
            queued_ms=round((self.started - self.since) * 1000, 3),
            compile_ms=round((self.compiled - self.started) * 1000, 3),
            kernel_ms=round((last - self.compiled) * 1000, 3),
        )


async def _scan(
    dataplane: protocol.Dataplane, settings: config.Settings, views: indexes.Indexes
) -> netns.Index:
    """The candidate namespaces, indexed by address; takes note of the node's own addresses."""
    scanned = await dataplane.call(protocol.Scan(settings.netns_dir, settings.scan_proc))
    views.set_host(scanned.host)
    return netns.Index(scanned.candidates)


async def _scan_quietly(scan: Callable[[], Awaitable[netns.Index]]) -> None:
    """A scan for the node's own addresses (agent.calc.desired.with_host_addresses): known
    before the first pod compiles, re-read at every resync (a CNI bridge appears with the
    node's first pod). A failure waits for the next pass: pods still scan when they need to."""
    with contextlib.suppress(Exception):
        await scan()


class Reconciler:
    def __init__(
        self,
        settings: config.Settings,
        cluster: store.Store,
        dataplane: protocol.Dataplane,
        recorder: report.Recorder,
        flows: flows_collector.Collector | None = None,
        watch: tamper.Watch | None = None,
    ) -> None:
        self.settings, self.store, self.dataplane = settings, cluster, dataplane
        self.flows = flows  # drop capture (agent.flows); None when disabled
        self.watch = watch or tamper.Watch()  # change notifications (agent.sync.tamper)
        self.holdover = holdover.Holdover(settings, dataplane, self.watch)  # API never reached
        self.backend = backends.get(settings.backend)
        self.reporter = report.Reporter(recorder)
        self.cuts = cuts.Cuts(dataplane, self.reporter, settings.strict)
        self.readiness = status.Readiness()
        self.pods: dict[str, sync_pod.PodState] = {}
        self._swept = False  # the first in-sync pass also sweeps leftover tables
        self._events_waiting: Callable[[], bool] = lambda: False
        self.indexes = indexes.Indexes(settings, cluster)

    @property
    def ready(self) -> bool:
        return self.readiness.ready

    def local_pods(self, change: store.Change | None = None) -> dict[str, model.Pod]:
        return self.indexes.local_pods(change)

    # -- main loop ------------------------------------------------------------------------
    async def run(self, queue: Queue) -> None:
        next_resync = time.monotonic() + self.settings.resync_period
        self._events_waiting = lambda: not queue.empty()
        while True:
            wake_at = min(
                [next_resync, self.holdover.due()]
                + [s.retry_at for s in self.pods.values() if s.retry_at]
            )
            batch = await self._next_batch(queue, wake_at)
            suspects = self.watch.take()  # woken by our own commits' notices: nothing to do
            if not batch and not suspects and time.monotonic() < wake_at:
                if self.cuts:
                    await self.cuts.run(self._events_waiting)
                continue
            verify = time.monotonic() >= next_resync
            if verify:
                next_resync = time.monotonic() + self.settings.resync_period
            await self._step(batch, suspects, verify)

    async def _step(
        self, batch: list[watch.WatchEvent | watch.Relist], suspects: set[str], verify: bool
    ) -> None:
        """Apply a batch to the store, then run a pass once every initial LIST is done."""
        change = store.Change()
        # A LIST (start, relist) loads the long-lived mirror, and the pass after it builds
        # the long-lived indexes: both without collections, then frozen (agent.heap).
        relists = any(isinstance(item, watch.Relist) for item in batch)
        with heap.bulk_load() if relists else contextlib.nullcontext():
            for item in batch:
                self.store.apply(item, change)
            if not self.store.in_sync:
                await self.holdover.step(suspects, verify)
                return
            self.holdover.end()
            since = min((item.received for item in batch), default=None)
            kind = "resync" if verify else ("tamper" if suspects else "retry")
            if batch:
                kind = eventkind.classify(change, self.store.pods, self.store.namespaces)
                kind = kind or batch[0].resource
            await self.reconcile(change, since=since, kind=kind, verify=verify, suspects=suspects)

    async def _next_batch(
        self, queue: Queue, wake_at: float
    ) -> list[watch.WatchEvent | watch.Relist]:
        """Every event waiting now; when none, the first to come before `wake_at` (at once
        when connection cuts wait to run, or when a change notification arrives)."""
        wait = 0.0 if self.cuts else max(0.0, wake_at - time.monotonic())
        first = await tamper.next_item(queue, self.watch.wake, wait)
        batch = [first] if first is not None else []
        while not queue.empty():
            batch.append(queue.get_nowait())
        return batch

    async def reconcile(
        self,
        change: store.Change | None = None,
        *,
        since: float | None = None,
        kind: str = "",
        verify: bool = False,
        suspects: Collection[str] = (),
    ) -> None:
        """One pass over every local pod; applies only what changed.

        With `verify` (the periodic resync), each pod's table is read back from the kernel:
        a table edited or flushed behind our back is restored (and counted as drift), and a
        namespace that vanished is noticed even when no API change touched its pod. The
        `suspects` (pods whose namespace saw a commit not ours) are read back in full.
        """
        run = Pass(kind, since, verify, frozenset(suspects))
        self._refresh_inputs(change)
        local = self.local_pods(change)
        self.readiness.first_pass([key for key, pod in local.items() if pod.ips])
        for key in set(self.pods) - set(local):
            await self._forget(self.pods.pop(key))
        if verify or self.indexes.host is None:
            await _scan_quietly(self._scan)  # the node's own addresses, before any pod compiles
        moved = self.indexes.take_host_moved()
        await self._plan_and_commit(run, local, None if moved else change)
        if self.indexes.take_host_moved():  # a scan during the pass saw them move
            await self._plan_and_commit(run, local, None)
        self._finish_pass(run)
        await self.cuts.run(self._events_waiting)
        status.update_gauges(self.pods)
        self.readiness.update(self.pods, self.store.pods.keys())
        if verify or not self._swept:
            self._swept = True
            services = set(self.store.services) | set(self.store.endpointslices)
            self.reporter.prune(self.store.pods.keys(), self.store.policies.keys(), services)
            tracked = {s.target.ino for s in self.pods.values() if s.target is not None}
            await sweep.guarded(
                self.dataplane, self.settings, self.store.pods, tracked, self.backend
            )

    def _refresh_inputs(self, change: store.Change | None) -> None:
        """Report bad policies and Service input when they changed; update the indexes."""
        if change is None or change.policies or change.relisted:
            self.reporter.invalid_policies(self.store.policies.values())
        if self.indexes.changed(change):
            self.reporter.service_problems(self.indexes.services())

    async def _plan_and_commit(
        self, run: Pass, local: dict[str, model.Pod], change: store.Change | None
    ) -> None:
        """Plan every pod that needs it (pure), handing the kernel work to the dataplane in
        chunks while the rest is planned; wait for all of it."""
        index: netns.Index | None = None
        calc: incremental.Calculator | None = None  # brought up to date once, if a pod plans
        targets = self.indexes.affected(local, change)
        run.recompiled = len(targets) if targets is not None else len(local)
        now = time.monotonic()
        work: list[asyncio.Task[None]] = []
        handed = 0  # run.plans[:handed] are in `work`
        try:
            for key in sorted(local):
                pod = local[key]
                state = self.pods.setdefault(key, sync_pod.PodState(key))
                verify = run.verify or key in run.suspects
                if not self._due(pod, state, targets, verify, now):
                    continue
                bound = log.bind(pod=pod.name, namespace=pod.namespace)
                try:
                    if state.target is None or state.target_ips != pod.ips:
                        index = index or await self._scan()
                        if not self._locate(pod, state, index, bound):
                            continue
                    calc = calc or self.indexes.calculator()
                    run.plans.append(self._plan(pod, state, calc, bound, verify))
                    run.plans[-1].suspect = key in run.suspects
                except Exception as exc:  # one pod's surprise must not stop the others
                    self._pod_failed(state, bound, exc)
                if len(run.plans) - handed >= PIPELINE_CHUNK:
                    # The worker programs these while the next ones compile (two cores).
                    work.append(asyncio.create_task(self._kernel(run.plans[handed:])))
                    handed = len(run.plans)
                    await asyncio.sleep(0)  # let the task send its request now
            run.compiled = time.monotonic()
            work.append(asyncio.create_task(self._kernel(run.plans[handed:])))
            await asyncio.gather(*work)
        finally:  # cancelled (the agent stops): no kernel work outlives the pass
            for task in work:
                task.cancel()

    def _due(
        self,
        pod: model.Pod,
        state: sync_pod.PodState,
        targets: set[str] | None,
        verify: bool,
        now: float,
    ) -> bool:
        """Whether this pass must plan `pod`."""
        if not pod.ips:
            state.state = sync_pod.Status.UNPROTECTED
            return False
        if (
            state.retry_at > now
            and state.target_ips == pod.ips
            and not _newly_quarantined(pod, state)
        ):
            return False  # backing off (a quarantine never waits for the backoff)
        current = state.fingerprint is not None and state.target_ips == pod.ips
        # Nothing this pod's ruleset depends on changed?
        return not (current and not verify and targets is not None and pod.key not in targets)

    async def _scan(self) -> netns.Index:
        return await _scan(self.dataplane, self.settings, self.indexes)

    def _locate(
        self,
        pod: model.Pod,
        state: sync_pod.PodState,
        index: netns.Index,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> bool:
        """Find the pod's namespace by its IPs; False (counted, retried) when none holds them."""
        target = index.find(pod.ips)
        if target is None:
            metrics.NETNS_LOOKUP_FAILURES.inc()
            failures.fail(
                state, sync_pod.Status.UNPROTECTED, f"no namespace holds {pod.ips}", bound
            )
            return False
        state.target, state.target_ips, state.fingerprint = target, pod.ips, None
        state.foreign = ()  # a namespace not read yet: its first read-back tells
        return True

    def _plan(
        self,
        pod: model.Pod,
        state: sync_pod.PodState,
        calc: incremental.Calculator,
        bound: structlog.typing.FilteringBoundLogger,
        verify: bool,
    ) -> sync_pod.Plan:
        """The pod's desired ruleset (from calc.incremental), rendered; kernel work later."""
        assert state.target is not None
        wanted = calc.desired(pod.key)
        self.reporter.containment_errors(
            pod, state.containment_errors, wanted.containment_errors, bound
        )
        state.containment_errors = wanted.containment_errors
        self.reporter.mode_label(pod, wanted.invalid_mode, wanted.refused_mode)
        rs = wanted.ruleset
        rendered = self.backend.render(rs, sync_pod.interfaces(state))
        return sync_pod.Plan(pod, state, state.target, rs, rendered, bound, verify, state.ruleset)

    async def _kernel(self, plans: list[sync_pod.Plan]) -> None:
        await kernel.run(plans, self.dataplane, self.backend, self)

    # -- kernel.Outcomes --------------------------------------------------------------------
    def failed(self, plan: sync_pod.Plan, exc: Exception) -> None:
        self._pod_failed(plan.state, plan.bound, exc)

    def adopted(self, plan: sync_pod.Plan) -> None:
        plan.bound.info("ruleset_adopted", fingerprint=plan.state.fingerprint)
        if plan.rs.quarantine is not None and plan.state.quarantined_since is None:
            self.cuts.after_commit(plan.pod, plan.state, plan.rs, plan.rs, None, plan.bound)

    def drift(self, plan: sync_pod.Plan, expected: str | None, found: str | None) -> None:
        self.reporter.drift(plan.pod, expected, found, plan.bound)

    def foreign(self, plan: sync_pod.Plan, before: tuple[str, ...]) -> None:
        self.reporter.foreign_hooks(plan.pod, before, plan.state.foreign, plan.bound)

    # -- after the kernel -------------------------------------------------------------------
    def _finish_pass(self, run: Pass) -> None:
        for plan in run.plans:
            if not plan.failed:
                self._finish(plan, run)
        run.summarize()

    def _finish(self, plan: sync_pod.Plan, run: Pass) -> None:
        """After the commits: bookkeeping, the pod's log line, metrics, containment."""
        state, rs, rendered = plan.state, plan.rs, plan.rendered
        if plan.done:
            state.adopted = False
            state.rendered = rendered
            latency = report.committed(plan, run.since, run.kind)
            state.fingerprint, state.ruleset, state.committed_wall = (
                rendered.fingerprint,
                rs,
                time.time(),
            )
            self.cuts.after_commit(plan.pod, state, plan.previous, rs, latency, plan.bound)
            if state.digest is None:  # a sole commit: its generation vouches for it
                self.watch.own(plan.pod.key, state.generation)
        state.succeed()
        self.watch.follow(plan.pod.key, plan.target)
        if self.flows is not None:
            # A replaced table starts its counters at zero; a patch keeps them counting.
            self.flows.watch(plan.pod, plan.target, rs, plan.mode is sync_pod.Mode.REPLACE)

    def _pod_failed(
        self, state: sync_pod.PodState, bound: structlog.typing.FilteringBoundLogger, exc: Exception
    ) -> None:
        """One pod's failure: counted, logged, retried with backoff; never the others'."""
        if failures.record(state, bound, exc) and self.flows is not None:
            self.flows.unwatch(state.key)

    async def _forget(self, state: sync_pod.PodState) -> None:
        self.cuts.drop(state.key)
        self.watch.drop(state.key)
        if self.flows is not None:
            self.flows.unwatch(state.key)
        if state.target is not None:
            try:
                await self.dataplane.call(protocol.Forget((state.target.ino,)))
            except protocol.DataplaneError as exc:
                log.warning("netns_release_failed", pod=state.key, error=str(exc))


def _newly_quarantined(pod: model.Pod, state: sync_pod.PodState) -> bool:
    """The pod carries the quarantine label but its rules in place are not a quarantine."""
    held = state.ruleset is not None and state.ruleset.quarantine is not None
    return containment.is_quarantined(pod) and not held
