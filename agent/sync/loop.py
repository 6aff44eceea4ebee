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
    placement,
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
    placing: float = 0.0  # seconds of the compile spent placing pods (namespace scans)
    plans: list[sync_pod.Plan] = dataclasses.field(default_factory=list)
    recompiled: int = 0
    read: kernel.Read = dataclasses.field(default_factory=dict)  # namespaces read while placing

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
            place_ms=round(self.placing * 1000, 3),
            kernel_ms=round((last - self.compiled) * 1000, 3),
        )


Step = tuple[list[watch.WatchEvent | watch.Relist], set[str], bool]


def announced_first(
    batch: list[watch.WatchEvent | watch.Relist], in_sync: bool, suspects: set[str], verify: bool
) -> list[Step]:
    """The steps (batch, suspects, verify) of one wake-up: podseg-cni's ADDs first, in a pass
    of their own, when the batch holds other work too (a due resync, suspects to read back,
    other events). A pod start waits for that pass, so it never waits for background work.
    Desired state depends only on the snapshot: applying a batch in two steps ends where
    applying it at once would."""
    announced = [item for item in batch if item.resource == store.CNI]
    if not announced or not in_sync or not (verify or suspects or len(announced) < len(batch)):
        return [(batch, suspects, verify)]
    rest = [item for item in batch if item.resource != store.CNI]
    return [(announced, set(), False), (rest, suspects, verify)]


async def _scan(
    dataplane: protocol.Dataplane, settings: config.Settings, views: indexes.Indexes
) -> netns.Index:
    """The candidate namespaces, indexed by address; takes note of the node's own addresses."""
    scanned = await dataplane.call(protocol.Scan(settings.netns_dir, settings.scan_proc))
    views.set_host(scanned.host)
    return netns.Index(scanned.candidates)


async def _scan_quietly(scan: Callable[[], Awaitable[netns.Index]]) -> None:
    """A scan for the node's own addresses (agent.calc.desired.with_host_addresses): known
    before the first pod compiles, re-read whenever pods are placed (a CNI bridge appears with the
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
        # Called after each pass's commits with its plans (agent.cni answers the plugin).
        self.after_commit: list[Callable[[list[sync_pod.Plan]], None]] = []

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
            for part in announced_first(batch, self.store.in_sync, suspects, verify):
                await self._step(*part)

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
        # Watch keys are per namespace (agent.sync.placement.flow_key); a suspect pod is read
        # back in each of its namespaces.
        run = Pass(kind, since, verify, frozenset(k.partition("@")[0] for k in suspects))
        self._refresh_inputs(change)
        local = self.local_pods(change)
        self.readiness.first_pass([key for key, pod in local.items() if pod.ips])
        for key in set(self.pods) - set(local):
            await self._forget(self.pods.pop(key))
        if self.indexes.host is None:
            # The node's own addresses, before any pod compiles; at resync, placing the pods
            # scans again and a move re-plans (below).
            await _scan_quietly(self._scan)
        self.indexes.take_host_moved()  # the calculator takes the Node's new addresses itself
        await self._plan_and_commit(run, local, change)
        if self.indexes.take_host_moved():  # a scan during the pass saw them move
            await self._plan_and_commit(run, local, None if change is None else store.Change())
        self._finish_pass(run)
        for hook in self.after_commit:
            hook(run.plans)
        await self.cuts.run(self._events_waiting)
        status.update_gauges(self.pods)
        self.readiness.update(self.pods, self.store.pods.keys())
        if verify or not self._swept:
            self._swept = True
            services = set(self.store.services) | set(self.store.endpointslices)
            self.reporter.prune(self.store.pods.keys(), self.store.policies.keys(), services)
            tracked = {slot.target.ino for s in self.pods.values() for slot in s.slots.values()}
            await sweep.guarded(
                self.dataplane, self.settings, self.store.pods, tracked, self.backend
            )

    def _refresh_inputs(self, change: store.Change | None) -> None:
        """Report bad policies and Service input when they changed; update the indexes."""
        if change is None or change.policies or change.relisted:
            self.reporter.invalid_policies(self.store.policies.values())
        if change is None or change.admin or change.relisted:
            self.reporter.admin_policies(self.store.admin_policies())
        if self.indexes.changed(change):
            self.reporter.service_problems(self.indexes.services())

    async def _plan_and_commit(
        self, run: Pass, local: dict[str, model.Pod], change: store.Change | None
    ) -> None:
        """Place the pods (a scan, when one needs it or at resync), plan every pod that needs
        it (pure, from the incremental calculator), handing the kernel work to the dataplane
        in chunks while the rest is planned; wait for all of it."""
        calc: incremental.Calculator | None = None  # brought up to date once, if a pod plans
        targets = self.indexes.affected(local, change)
        run.recompiled += len(targets) if targets is not None else len(local)
        now = time.monotonic()
        due = set()
        for key, pod in local.items():
            state = self.pods.setdefault(key, sync_pod.PodState(key))
            if self._due(pod, state, targets, run.verify or key in run.suspects, now):
                due.add(key)
        placing = time.monotonic()
        run.read = await placement.pin_announced(
            self.dataplane, self.backend, self.settings, self.store, self.pods, local, due
        )
        if run.verify or any(placement.unplaced(local[key], self.pods[key]) for key in due):
            due |= await self._place(local, due)
        run.placing += time.monotonic() - placing
        work: list[asyncio.Task[None]] = []
        handed = 0  # run.plans[:handed] are in `work`
        try:
            for key in sorted(due):
                pod, state = local[key], self.pods[key]
                bound = log.bind(pod=pod.name, namespace=pod.namespace)
                try:
                    if not state.slots:
                        failures.unlocated(state, pod.ips, bound)
                        continue
                    calc = calc or self.indexes.calculator()
                    suspect = key in run.suspects
                    verify = run.verify or suspect
                    plans = _plans(pod, state, calc, self.backend, self.reporter, bound, verify)
                    for plan in plans:
                        plan.suspect = suspect
                    run.plans += plans
                except Exception as exc:  # one pod's surprise must not stop the others
                    self._pod_failed(state, bound, exc)
                if len(run.plans) - handed >= PIPELINE_CHUNK:
                    # The worker programs these while the next ones compile (two cores).
                    work.append(asyncio.create_task(self._kernel(run.plans[handed:], run.read)))
                    handed = len(run.plans)
                    await asyncio.sleep(0)  # let the task send its request now
            run.compiled = time.monotonic()
            work.append(asyncio.create_task(self._kernel(run.plans[handed:], run.read)))
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

    async def _place(self, local: dict[str, model.Pod], due: set[str]) -> set[str]:
        """Scan the namespaces and place every local pod (agent.sync.placement); the pods
        whose namespaces changed, to plan too. A failed scan fails the due pods that needed
        it (retried) and places nothing."""
        try:
            index = await self._scan()
            moves = await placement.place(self.dataplane, index, self.pods, local, self.flows)
        except protocol.DataplaneError as exc:
            for key in due:
                if placement.unplaced(local[key], self.pods[key]):
                    bound = log.bind(pod=local[key].name, namespace=local[key].namespace)
                    self._pod_failed(self.pods[key], bound, exc)
            return set()
        for key in moves.moved:
            self.reporter.placement(local[key], self.pods[key], placement.summary(self.pods[key]))
        return moves.moved

    async def _kernel(self, plans: list[sync_pod.Plan], read: kernel.Read) -> None:
        await kernel.run(plans, self.dataplane, self.backend, self, read)

    # -- kernel.Outcomes --------------------------------------------------------------------
    def failed(self, plan: sync_pod.Plan, exc: Exception) -> None:
        self._pod_failed(plan.state, plan.bound, exc)

    def adopted(self, plan: sync_pod.Plan) -> None:
        plan.bound.info("ruleset_adopted", fingerprint=plan.slot.fingerprint)
        if plan.rs.quarantine is not None and plan.state.quarantined_since is None:
            self.cuts.after_commit(plan.pod, plan.state, plan.slot, None, plan.rs, None, plan.bound)

    def drift(self, plan: sync_pod.Plan, expected: str | None, found: str | None) -> None:
        self.reporter.drift(plan.pod, expected, found, plan.bound)

    def foreign(self, plan: sync_pod.Plan, before: tuple[str, ...]) -> None:
        self.reporter.foreign_hooks(plan.pod, before, plan.slot.foreign, plan.bound)

    # -- after the kernel -------------------------------------------------------------------
    def _finish_pass(self, run: Pass) -> None:
        failed = {plan.state.key for plan in run.plans if plan.failed}
        for plan in run.plans:
            if not plan.failed:
                self._finish(plan, run)
                if plan.state.key not in failed:  # each of its namespaces holds its rules
                    plan.state.succeed()
        run.summarize()

    def _finish(self, plan: sync_pod.Plan, run: Pass) -> None:
        """After the commits: bookkeeping, the pod's log line, metrics, containment."""
        slot, rs, rendered = plan.slot, plan.rs, plan.rendered
        if plan.done:
            slot.adopted = False
            slot.rendered = rendered
            latency = report.committed(plan, run.since, run.kind)
            slot.fingerprint, slot.ruleset = rendered.fingerprint, rs
            plan.state.committed_wall = time.time()
            self.cuts.after_commit(
                plan.pod, plan.state, slot, plan.previous, rs, latency, plan.bound
            )
            if slot.digest is None:  # a sole commit: its generation vouches for it
                self.watch.own(placement.flow_key(plan.state, slot), slot.generation)
        self.watch.follow(placement.flow_key(plan.state, slot), plan.target)
        if self.flows is not None:
            # A replaced table starts its counters at zero; a patch keeps them counting.
            replaced = plan.mode is sync_pod.Mode.REPLACE
            key = placement.flow_key(plan.state, slot)
            self.flows.watch(plan.pod, plan.target, rs, replaced, key=key)

    def _pod_failed(
        self, state: sync_pod.PodState, bound: structlog.typing.FilteringBoundLogger, exc: Exception
    ) -> None:
        """One pod's failure: counted, logged, retried with backoff; never the others'."""
        keys = [placement.flow_key(state, slot) for slot in state.slots.values()]
        if failures.record(state, bound, exc) and self.flows is not None:
            for key in keys:
                self.flows.unwatch(key)

    async def _forget(self, state: sync_pod.PodState) -> None:
        self.cuts.drop(state.key)
        for slot in state.slots.values():
            self.watch.drop(placement.flow_key(state, slot))
        if self.flows is not None:
            for slot in state.slots.values():
                self.flows.unwatch(placement.flow_key(state, slot))
        if state.slots:
            inos = tuple(slot.target.ino for slot in state.slots.values())
            try:
                await self.dataplane.call(protocol.Forget(inos))
            except protocol.DataplaneError as exc:
                log.warning("netns_release_failed", pod=state.key, error=str(exc))


def _plans(
    pod: model.Pod,
    state: sync_pod.PodState,
    calc: incremental.Calculator,
    backend: backends.Backend,
    reporter: report.Reporter,
    bound: structlog.typing.FilteringBoundLogger,
    verify: bool,
) -> list[sync_pod.Plan]:
    """The pod's desired ruleset in each of its namespaces (the incremental calculator's,
    equal to `calc.desired.desired`), rendered; the kernel work comes later."""
    plans: list[sync_pod.Plan] = []
    for slot in state.slots.values():
        link = placement.link_of(slot.target)
        wanted = calc.desired_in(pod.key, link, lockdown=slot.lockdown)
        if not plans:  # about the pod, not the namespace: reported once
            reporter.containment_errors(
                pod, state.containment_errors, wanted.containment_errors, bound
            )
            state.containment_errors = wanted.containment_errors
            reporter.mode_label(pod, wanted.invalid_mode, wanted.refused_mode)
        rs = wanted.ruleset
        # From the last commit's rendering when only peer-set elements changed (its element
        # patch comes with it); otherwise rendered whole and, for a patch, diffed.
        rendered = backend.derive(slot.ruleset, slot.rendered, rs, sync_pod.interfaces(slot))
        if slot.rendered is not None and rendered.patch is None and rs != slot.ruleset:
            metrics.PATCH_FALLBACKS.labels(backend.name, "rendered").inc()
        plans.append(sync_pod.Plan(pod, state, slot, rs, rendered, bound, verify, slot.ruleset))
    return plans


def _newly_quarantined(pod: model.Pod, state: sync_pod.PodState) -> bool:
    """The pod carries the quarantine label but its rules in place are not a quarantine."""
    held = [s.ruleset for s in state.slots.values() if not s.lockdown]
    quarantined = bool(held) and all(rs is not None and rs.quarantine is not None for rs in held)
    return containment.is_quarantined(pod) and not quarantined
