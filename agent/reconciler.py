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
import datetime
import time
from collections.abc import Callable

import structlog

from agent import config, heap, metrics, model, store
from agent.calc import affected as calc_affected
from agent.calc import compile as calc_compile
from agent.calc import containment, ruleset, verdict
from agent.calc import mode as calc_mode
from agent.calc import services as calc_services
from agent.dataplane import backends, client, netns
from agent.dataplane.nft import render as render_nft
from agent.flows import collector as flows_collector
from agent.k8s import events, watch
from agent.sync import eventkind, sweep

log = structlog.get_logger(__name__)

READINESS_ATTEMPTS = 3
# A pass with more pods than this hands their kernel work to the worker in chunks of this
# many while it compiles the rest; a pass under it (most events) sends one batch.
PIPELINE_CHUNK = 16


@dataclasses.dataclass
class PodState:
    """What the agent knows about one local pod's namespace and rules."""

    key: str
    target: netns.Target | None = None
    target_ips: tuple[str, ...] = ()
    fingerprint: str | None = None
    digest: str | None = None  # of the kernel's whole stateless listing after our apply
    # The namespace's nftables generation after our last commit (None: unknown), and what
    # that commit holds: together they allow incremental updates (agent.dataplane.nft.incremental).
    generation: int | None = None
    rendered: backends.Program | None = None
    adopted: bool = False  # found in place at start: trusted by comment until first resync
    state: str = "unprotected"
    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""
    ruleset: ruleset.PodRuleset | None = None  # the last one committed by this agent
    quarantined_since: float | None = None  # wall clock, when this agent isolated the pod
    containment_errors: tuple[str, ...] = ()


@dataclasses.dataclass
class _Plan:
    """One pod's work in a pass: its compiled ruleset, then what the kernel steps found.

    A pass compiles every affected pod first (pure), then reads back, patches and replaces
    in a few batched worker requests (`WorkerClient.batch`), then finishes each pod."""

    pod: model.Pod
    state: PodState
    target: netns.Target
    rs: ruleset.PodRuleset
    rendered: backends.Program
    bound: structlog.typing.FilteringBoundLogger
    verify: bool  # read the namespace back (resync), unless its generation proves no change
    previous: ruleset.PodRuleset | None  # what this agent committed before (strict mode)
    event: str = "ruleset_applied"
    script: str | None = None  # the incremental patch, when one applies
    mode: str = ""  # how it was committed ("patch" or "replace"); "" not (yet) committed
    committed_at: float = 0.0  # monotonic time the commit's reply arrived
    apply_seconds: float = 0.0  # the worker's own time for the commit
    failed: bool = False
    # Reverification: the digest of the listing found before our rewrite (compared after it)
    seen: str | None = None

    @property
    def done(self) -> bool:
        return bool(self.mode)

    def committed(self, mode: str, at: float, seconds: float) -> None:
        self.mode, self.committed_at, self.apply_seconds = mode, at, seconds


@dataclasses.dataclass
class _Cut:
    """Connections of one pod to cut once the pass has committed every affected pod."""

    pod: model.Pod
    target: netns.Target
    rs: ruleset.PodRuleset
    reason: str  # "quarantine" (delete the entries) or "strict" (mark them denied)
    bound: structlog.typing.FilteringBoundLogger
    # strict: the ruleset before the change; the cut happens only if the change removed an
    # allow (checked after the pass, off the path to enforcement)
    previous: ruleset.PodRuleset | None = None


class Reconciler:
    def __init__(
        self,
        settings: config.Settings,
        cluster: store.Store,
        dataplane: client.WorkerClient,
        recorder: events.Recorder,
        flows: flows_collector.Collector | None = None,
    ) -> None:
        self.flows = flows  # drop capture (agent.flows); None when disabled
        self._reported_modes: set[tuple[str, str]] = set()
        self.settings = settings
        self.store = cluster
        self.dataplane = dataplane
        self.recorder = recorder
        self.pods: dict[str, PodState] = {}
        self.ready = False
        self._initial: set[str] | None = None
        self._reported_invalid: set[tuple[str, str]] = set()
        self._swept = False  # the first in-sync pass also sweeps leftover tables
        # Connections to cut after a pass, by pod (see _cut_connections); whether API events
        # wait to be handled (set by `run`), which defers strict-mode cuts.
        self._cuts: dict[str, _Cut] = {}
        self._events_waiting: Callable[[], bool] = lambda: False
        self._reported_services: set[tuple[str, str, str, str]] = set()
        self._services: calc_services.ServiceIndex | None = None  # until Services change
        # The peer index of the last pass that compiled, and the pods changed since (None:
        # rebuild it whole); updated, not rebuilt, when only a few pods changed.
        self._peer_index: calc_compile.ClusterIndex | None = None
        self._peers_dirty: set[str] | None = None
        self._local: dict[str, model.Pod] | None = None  # see local_pods
        self.backend = backends.get(settings.backend)

    # -- which pods -----------------------------------------------------------------------
    def is_local(self, pod: model.Pod) -> bool:
        return pod.node_name == self.settings.node_name and not pod.host_network

    def local_pods(self, change: store.Change | None = None) -> dict[str, model.Pod]:
        """This node's pods; with `change`, updated from the last call's answer for only the
        pods that changed (scanning 10,000 cluster pods costs ~4 ms per pass)."""
        if change is None or change.relisted or self._local is None:
            self._local = {key: pod for key, pod in self.store.pods.items() if self.is_local(pod)}
        else:
            for key in change.pods:
                pod = self.store.pods.get(key)
                if pod is not None and self.is_local(pod):
                    self._local[key] = pod
                else:
                    self._local.pop(key, None)
        return dict(self._local)

    # -- main loop ------------------------------------------------------------------------
    async def run(self, queue: asyncio.Queue[watch.WatchEvent | watch.Relist]) -> None:
        next_resync = time.monotonic() + self.settings.resync_period
        self._events_waiting = lambda: not queue.empty()
        while True:
            now = time.monotonic()
            wake_at = min([next_resync] + [s.retry_at for s in self.pods.values() if s.retry_at])
            batch: list[watch.WatchEvent | watch.Relist] = []
            with contextlib.suppress(TimeoutError):
                # Connection cuts left over from the last pass run as soon as no event waits.
                wait = 0.0 if self._cuts else max(0.0, wake_at - now)
                batch.append(await asyncio.wait_for(queue.get(), wait))
            while not queue.empty():
                batch.append(queue.get_nowait())
            if not batch and self._cuts and time.monotonic() < wake_at:
                await self._cut_connections()
                continue
            change = store.Change()
            # A LIST (start, relist) loads the long-lived mirror, and the pass after it builds
            # the long-lived indexes: both without collections, then frozen (agent.heap).
            relists = any(isinstance(item, watch.Relist) for item in batch)
            with heap.bulk_load() if relists else contextlib.nullcontext():
                for item in batch:
                    self.store.apply(item, change)
                if not self.store.in_sync:
                    continue
                verify = time.monotonic() >= next_resync
                if verify:
                    next_resync = time.monotonic() + self.settings.resync_period
                since = min((item.received for item in batch), default=None)
                kind = batch[0].resource if batch else ("resync" if verify else "retry")
                if batch:
                    kind = (
                        eventkind.classify(change, self.store.pods, self.store.namespaces) or kind
                    )
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
        started = time.monotonic()
        if change is None or change.policies or change.relisted:
            self._report_invalid_policies()
        if change is None or change.services or change.endpointslices or change.relisted:
            self._services = None
            self._report_service_problems(self._service_index())
        if change is None or change.relisted or self._peers_dirty is None:
            self._peers_dirty = None
        else:
            self._peers_dirty.update(change.pods)
        local = self.local_pods(change)
        if self._initial is None:
            self._initial = {key for key, pod in local.items() if pod.ips}
        for key in set(self.pods) - set(local):
            await self._forget(self.pods.pop(key))
        index: netns.Index | None = None
        peers: calc_compile.ClusterIndex | None = None  # built once, only if a pod compiles
        targets = self._affected(local, change)
        now = time.monotonic()
        plans: list[_Plan] = []
        kernel: list[asyncio.Task[None]] = []  # the batched kernel work of the plans so far
        handed = 0  # plans[:handed] are in `kernel`
        try:
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
                            self._failed(
                                state, "unprotected", f"no namespace holds {pod.ips}", bound
                            )
                            continue
                        state.target, state.target_ips, state.fingerprint = target, pod.ips, None
                    if peers is None:
                        peers = self._peers()
                    plans.append(self._plan(pod, state, peers, bound, verify))
                except Exception as exc:  # one pod's surprise must not stop the others
                    self._pod_failed(state, bound, exc)
                if len(plans) - handed >= PIPELINE_CHUNK:
                    # The worker programs these while the next ones compile (two cores).
                    kernel.append(asyncio.create_task(self._kernel(plans[handed:])))
                    handed = len(plans)
                    await asyncio.sleep(0)  # let the task send its request now
            compiled = time.monotonic()
            kernel.append(asyncio.create_task(self._kernel(plans[handed:])))
            await asyncio.gather(*kernel)
        finally:  # cancelled (the agent stops): no kernel work outlives the pass
            for task in kernel:
                task.cancel()
        committed: collections.Counter[str] = collections.Counter()
        last_commit: float | None = None
        for plan in plans:
            if plan.failed:
                continue
            self._finish(plan, since, kind)
            if plan.mode:
                committed[plan.mode] += 1
                last_commit = max(last_commit or 0.0, plan.committed_at)
        if committed and since is not None and last_commit is not None:
            # From the first event of the batch being received to the last affected pod's
            # rules being committed: what scripts/bench/time_to_enforce.py measures.
            metrics.PASS_SECONDS.labels(kind or "unknown").observe(last_commit - since)
            log.info(
                "reconcile_committed",
                trigger=kind,
                pods=sum(committed.values()),
                patched=committed.get("patch", 0),
                recompiled=len(targets) if targets is not None else len(local),
                latency_ms=round((last_commit - since) * 1000, 3),
                # where it went: waiting for the pass, deciding and compiling, the kernel
                queued_ms=round((started - since) * 1000, 3),
                compile_ms=round((compiled - started) * 1000, 3),
                kernel_ms=round((last_commit - compiled) * 1000, 3),
            )
        await self._cut_connections()
        self._update_gauges()
        self._update_readiness()
        if verify or not self._swept:
            self._swept = True
            await self._sweep()

    async def _kernel(self, plans: list[_Plan]) -> None:
        """The kernel work of some plans, in a few batched worker requests: resync shortcuts,
        read-backs, then commits. Never raises: a failure fails the plans it touched."""
        for step in (self._skip_unchanged, self._examine_plans, self._commit_plans):
            try:
                await step([p for p in plans if not p.failed])
            except Exception as exc:  # the whole batch (worker timeout): every pod still in it
                for plan in plans:
                    if not plan.failed and not plan.done:
                        self._plan_failed(plan, exc)

    def _plan(
        self,
        pod: model.Pod,
        state: PodState,
        peers: calc_compile.ClusterIndex,
        bound: structlog.typing.FilteringBoundLogger,
        verify: bool,
    ) -> _Plan:
        """Compile and render one pod's ruleset (pure); the kernel work comes later."""
        assert state.target is not None
        node = self.store.nodes.get(self.settings.node_name)
        compiled = calc_compile.compile_indexed(
            pod,
            self.store.policies_for(pod),
            peers,
            node.addresses if node is not None else (),
            self._service_index(),
        )
        contained = containment.contain(
            compiled,
            pod,
            self.store.namespaces.get(pod.namespace),
            self.store.nodes.values(),
            self.settings.node_guard_ports,
        )
        self._report_containment_errors(pod, state, contained.errors, bound)
        self._check_mode_label(pod)
        rs = contained.ruleset
        rendered = self.backend.render(rs, state.target.interfaces)
        return _Plan(pod, state, state.target, rs, rendered, bound, verify, state.ruleset)

    async def _skip_unchanged(self, plans: list[_Plan]) -> None:
        """Resync: a namespace whose nftables generation is still the one of our own last
        commit holds exactly what we committed, so it needs no listing."""
        checks = [
            p
            for p in plans
            if p.verify
            and p.state.fingerprint is not None
            and p.state.generation is not None
            and not p.state.adopted
        ]
        if not checks:
            return
        replies = await self.dataplane.batch(
            [{"op": "generation", "path": p.target.path, "ino": p.target.ino} for p in checks]
        )
        for plan, reply in zip(checks, replies, strict=True):
            if isinstance(reply, client.DataplaneError):
                self._plan_failed(plan, reply)
            elif client.as_int(reply.get("generation")) == plan.state.generation:
                plan.verify = False  # nothing was committed there since our own commit

    async def _examine_plans(self, plans: list[_Plan]) -> None:
        """First contact (adopt what an earlier agent left) and resync (drift) read-backs."""
        reads = [p for p in plans if p.state.fingerprint is None or p.verify]
        if not reads:
            return
        replies = await self.dataplane.batch(
            [self.backend.examine_request(p.target, whole=p.verify) for p in reads]
        )
        for plan, reply in zip(reads, replies, strict=True):
            if isinstance(reply, client.DataplaneError):
                self._plan_failed(plan, reply)
                continue
            self._examined(plan, *client.examined(reply))

    def _examined(
        self, plan: _Plan, current: str | None, digest: str | None, generation: int | None
    ) -> None:
        state, rendered, rs, bound = plan.state, plan.rendered, plan.rs, plan.bound
        if state.fingerprint is None:
            # First contact: an earlier agent may have left exactly this ruleset; adopt it.
            if current == rendered.fingerprint:
                bound.info("ruleset_adopted", fingerprint=current)
                state.fingerprint, state.digest, state.adopted = current, digest, True
                state.ruleset = rs
                state.generation, state.rendered = generation, rendered
                if rs.quarantine is not None and state.quarantined_since is None:
                    self._contain(plan.pod, state, rs, rs, None, bound)
            elif current is not None and plan.previous is None:
                # An older podseg ruleset is in place (e.g. changed while the agent was
                # down): treat it as one that allowed everything, so strict mode checks.
                plan.previous = ruleset.PodRuleset(rs.namespace, rs.pod)
        elif current != state.fingerprint or (state.digest is not None and digest != state.digest):
            # Resync: the kernel no longer holds exactly what we committed.
            self._drift(plan.pod, state, current, bound)
        elif state.digest is None:
            # Our last commit was not read back (it was the namespace's only one) and something
            # was committed in the namespace since: the fingerprint still matches but we cannot
            # vouch for the rest, so rewrite it (atomically, no gap) and read it back; if the
            # rewrite changed the listing, that something was an edit of our table (drift).
            state.fingerprint, plan.event, plan.seen = None, "ruleset_reverified", digest
        elif state.adopted:
            # An adopted table was vouched for by its comment alone; rewrite it once
            # (atomically, no gap) so that from now on its digest is ours to compare.
            state.fingerprint, state.adopted, plan.event = None, False, "ruleset_reverified"

    async def _commit_plans(self, plans: list[_Plan]) -> None:
        """Commit every plan whose ruleset is not in place: incrementally when only set
        elements changed since our last commit and nobody else committed in the namespace
        since, else by replacing the tables; a refused patch is replaced in the same pass."""
        pending = [p for p in plans if p.state.fingerprint != p.rendered.fingerprint]
        for plan in pending:
            plan.script = self._patch_script(plan.state, plan.rendered)
        patches = [p for p in pending if p.script]
        replaces = [p for p in pending if not p.script]
        if patches:
            replies = await self.dataplane.batch(
                [
                    {
                        "op": "patch",
                        "path": p.target.path,
                        "ino": p.target.ino,
                        "script": p.script,
                        "generation": p.state.generation or 0,
                    }
                    for p in patches
                ]
            )
            arrived = time.monotonic()
            for plan, reply in zip(patches, replies, strict=True):
                if isinstance(reply, client.ApplyFailed):  # atomic: nothing changed
                    plan.bound.warning("incremental_update_failed", error=str(reply))
                elif isinstance(reply, client.DataplaneError):
                    self._plan_failed(plan, reply)
                    continue
                elif reply.get("applied") and reply.get("sole"):
                    plan.state.generation = client.as_int(reply.get("generation"))
                    plan.state.digest = None
                    plan.committed("patch", arrived, float(reply.get("seconds") or 0.0))
                    continue
                metrics.RULESET_UPDATES.labels("patch_refused").inc()
                replaces.append(plan)
        if replaces:
            replies = await self.dataplane.batch(
                [
                    self.backend.commit_request(p.target, p.rendered, read_back=bool(p.seen))
                    for p in replaces
                ]
            )
            arrived = time.monotonic()
            for plan, reply in zip(replaces, replies, strict=True):
                if isinstance(reply, client.DataplaneError):
                    self._plan_failed(plan, reply)
                    continue
                plan.state.digest, plan.state.generation = client.committed(reply)
                plan.committed("replace", arrived, float(reply.get("seconds") or 0.0))
                if plan.seen is not None and plan.state.digest != plan.seen:
                    current = plan.rendered.fingerprint
                    self._report_drift(plan.pod, current, current, plan.bound)

    def _patch_script(self, state: PodState, rendered: backends.Program) -> str | None:
        if (
            state.rendered is not None
            and state.generation is not None
            and state.fingerprint is not None
            and state.fingerprint == state.rendered.fingerprint
            and not state.adopted
        ):
            return self.backend.patch_script(state.rendered, rendered)
        return None

    def _finish(self, plan: _Plan, since: float | None, kind: str) -> None:
        """After the commits: bookkeeping, the pod's log line, metrics, containment."""
        state, rs, rendered = plan.state, plan.rs, plan.rendered
        if plan.mode:
            state.adopted = False
            state.rendered = rendered
            metrics.RULESET_UPDATES.labels(plan.mode).inc()
            metrics.APPLY_SECONDS.observe(plan.apply_seconds)
            metrics.APPLIES.inc()
            latency = None
            if since is not None:
                latency = plan.committed_at - since
                metrics.POLICY_PROGRAMMING_SECONDS.labels(kind or "unknown").observe(latency)
            plan.bound.info(
                plan.event,
                fingerprint=rendered.fingerprint,
                ingress_isolated=rs.ingress.isolated,
                egress_isolated=rs.egress.isolated,
                policy_mode=rs.mode.value,
                policies=sorted(set(rs.ingress.policies) | set(rs.egress.policies)),
                quarantined=rs.quarantine is not None,
                node_guard=rs.node_guard is not None,
                apply_ms=round(plan.apply_seconds * 1000, 3),
                mode=plan.mode,
                latency_ms=round(latency * 1000, 3) if latency is not None else None,
                trigger=kind,
            )
            state.fingerprint = rendered.fingerprint
            state.ruleset = rs
            self._contain(plan.pod, state, plan.previous, rs, latency, plan.bound)
        state.state, state.failures, state.retry_at, state.last_error = "enforced", 0, 0.0, ""
        if self.flows is not None:
            # A replaced table starts its counters at zero; a patch keeps them counting.
            self.flows.watch(plan.pod, plan.target, rs, plan.mode == "replace")

    def _plan_failed(self, plan: _Plan, exc: Exception) -> None:
        plan.failed = True
        self._pod_failed(plan.state, plan.bound, exc)

    def _pod_failed(
        self, state: PodState, bound: structlog.typing.FilteringBoundLogger, exc: Exception
    ) -> None:
        """One pod's failure: counted, logged, retried with backoff; never the others'."""
        if isinstance(exc, client.NetnsGone):
            metrics.APPLY_ERRORS.labels("netns_gone").inc()
            state.target, state.fingerprint = None, None
            if self.flows is not None:
                self.flows.unwatch(state.key)
            self._failed(state, "unprotected", str(exc), bound)
        elif isinstance(exc, client.WorkerTimeout):
            metrics.APPLY_ERRORS.labels("timeout").inc()
            self._failed(state, "failed", str(exc), bound)
        elif isinstance(exc, client.ApplyFailed):
            metrics.APPLY_ERRORS.labels("nft").inc()
            self._failed(state, "failed", str(exc), bound)
        else:
            metrics.APPLY_ERRORS.labels("internal").inc()
            bound.error(
                "reconcile_pod_crashed",
                error=f"{type(exc).__name__}: {exc}",
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            self._failed(state, "failed", f"{type(exc).__name__}: {exc}", bound)

    def _check_mode_label(self, pod: model.Pod) -> None:
        """Report (once per value) a `podseg.io/mode` label that is neither mode: enforced."""
        _mode, invalid = calc_mode.resolve(pod, self.store.namespaces)
        if invalid is None or (pod.key, invalid) in self._reported_modes:
            return
        self._reported_modes.add((pod.key, invalid))
        metrics.INVALID_MODE_LABELS.inc()
        log.warning(
            "invalid_mode_label",
            pod=pod.name,
            namespace=pod.namespace,
            label=calc_mode.LABEL,
            value=invalid,
            effect="enforce (the default) applies",
        )

    def _contain(
        self,
        pod: model.Pod,
        state: PodState,
        previous: ruleset.PodRuleset | None,
        rs: ruleset.PodRuleset,
        latency: float | None,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        """After a commit: quarantine bookkeeping, then cut connections that are now illegal.

        Quarantine always cuts (its point is to stop what is already running); otherwise strict
        mode cuts when the change may have removed an allow. The cut runs after the commit, so
        a connection whose entry is deleted meets the new ruleset with its next packet.
        """
        quarantined = rs.quarantine is not None
        reason = ""
        if quarantined and state.quarantined_since is None:
            state.quarantined_since = time.time()
            since = _iso(state.quarantined_since)
            allow = (
                [render_nft.format_addr(r) for r in rs.quarantine.allow_from]
                if rs.quarantine
                else []
            )
            bound.warning(
                "pod_quarantined",
                since=since,
                allow_from=allow,
                latency_ms=round(latency * 1000, 3) if latency is not None else None,
            )
            self.recorder.on_pod(
                pod,
                reason="Quarantined",
                message=f"podseg quarantined this pod at {since}: all traffic in and out is "
                f"dropped and its connections were cut"
                + (f"; forensic access from {', '.join(allow)}" if allow else ""),
            )
            reason = "quarantine"
        elif quarantined and previous is not None and previous.quarantine != rs.quarantine:
            reason = "quarantine"  # forensic sources changed
        elif not quarantined and state.quarantined_since is not None:
            held = time.time() - state.quarantined_since
            bound.info(
                "pod_quarantine_lifted",
                since=_iso(state.quarantined_since),
                quarantined_seconds=round(held, 3),
            )
            self.recorder.on_pod(
                pod,
                reason="QuarantineLifted",
                message=f"podseg lifted this pod's quarantine (in place since "
                f"{_iso(state.quarantined_since)}); normal enforcement restored",
                event_type="Normal",
            )
            state.quarantined_since = None
        if not reason and self.settings.strict and previous is not None:
            reason = "strict"  # if the change removed an allow: decided in _cut_connections
        if not reason:
            return
        assert state.target is not None
        # Cut after the pass: every affected pod's rules are committed first, so listing
        # conntrack tables (12-40 ms each: the kernel walks its global table) never delays
        # another pod's enforcement.
        earlier = self._cuts.get(pod.key)
        if earlier is not None:  # not cut yet: one cut covers both changes
            previous = earlier.previous
            reason = "quarantine" if "quarantine" in (reason, earlier.reason) else reason
        self._cuts[pod.key] = _Cut(pod, state.target, rs, reason, bound, previous)

    async def _cut_connections(self) -> None:
        """Delete (quarantine) or mark denied (strict mode) the conntrack entries of this
        pass's pods that their new rulesets no longer allow.

        Quarantine cuts all run now. Strict-mode cuts (a conntrack listing costs 12-40 ms per
        pod) yield to API events waiting to be handled, so they never delay the next change's
        enforcement: at least one runs per call, the rest as soon as no event waits.
        """
        ran = 0
        for key in sorted(self._cuts, key=lambda k: self._cuts[k].reason != "quarantine"):
            job = self._cuts[key]
            if job.reason != "quarantine" and ran and self._events_waiting():
                return
            del self._cuts[key]
            ran += 1
            if job.reason == "strict" and not verdict.removes_allows(job.previous, job.rs):
                continue  # the change only added allows: no connection became illegal
            started = time.monotonic()
            try:
                entries = await self.dataplane.conntrack_list(job.target)
                doomed = verdict.illegal(job.rs, job.pod.ips, entries)
                cut = 0
                if doomed and job.reason == "quarantine":
                    # Deleted: the quarantine chains sit before any conntrack shortcut, so
                    # whatever the next packet of such a connection is, it is dropped.
                    cut = await self.dataplane.conntrack_delete(job.target, doomed)
                elif doomed:
                    cut = await self.dataplane.conntrack_mark(
                        job.target, doomed, render_nft.DENY_MARK
                    )
            except client.DataplaneError as exc:
                metrics.APPLY_ERRORS.labels("conntrack").inc()
                job.bound.warning("connections_cut_failed", reason=job.reason, error=str(exc))
                continue
            took = time.monotonic() - started
            metrics.CONNTRACK_CUT_SECONDS.observe(took)
            metrics.CONNECTIONS_CUT.labels(job.reason).inc(cut)
            job.bound.info(
                "connections_cut",
                reason=job.reason,
                entries=len(entries),
                cut=cut,
                action="deleted" if job.reason == "quarantine" else "marked denied",
                cut_ms=round(took * 1000, 3),
            )

    def _report_containment_errors(
        self,
        pod: model.Pod,
        state: PodState,
        errors: tuple[str, ...],
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        """A bad forensic annotation never lifts a quarantine; say why once per change."""
        if errors == state.containment_errors:
            return
        state.containment_errors = errors
        if not errors:
            return
        bound.warning(
            "quarantine_annotation_invalid",
            errors=list(errors),
            effect="quarantine applies; invalid entries are ignored",
        )
        self.recorder.on_pod(
            pod,
            reason="InvalidQuarantineAnnotation",
            message="podseg quarantine applies; ignored invalid entries: " + "; ".join(errors),
        )

    def _peers(self) -> calc_compile.ClusterIndex:
        """The peer index of the current snapshot (fresh per pass: it memoises peers)."""
        if self._peer_index is None or self._peers_dirty is None:
            index = calc_compile.build_index(self.store.namespaces, self.store.pods.values())
        else:
            index = calc_compile.update_index(
                self._peer_index, self.store.namespaces, self.store.pods, self._peers_dirty
            )
        self._peer_index, self._peers_dirty = index, set()
        return index

    def _drift(
        self,
        pod: model.Pod,
        state: PodState,
        current: str | None,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._report_drift(pod, state.fingerprint, current, bound)
        state.fingerprint, state.digest, state.generation = None, None, None

    def _report_drift(
        self,
        pod: model.Pod,
        expected: str | None,
        current: str | None,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        metrics.RULESET_DRIFT.inc()
        what = "removed" if current is None else "edited"
        bound.warning("ruleset_drift", expected=expected, found=current, change=what)
        self.recorder.on_pod(
            pod,
            reason="RulesetDrift",
            message=f"podseg rules in this pod's network namespace were {what} outside podseg "
            f"(found fingerprint {current or 'none'}, expected {expected}); restored",
        )

    def _affected(
        self, local: dict[str, model.Pod], change: store.Change | None
    ) -> set[str] | None:
        if change is None:
            return None
        return calc_affected.affected(
            local,
            self.store.policies.values(),
            self.store.namespaces,
            self.store.affected_changes(change),
            policies_for=self.store.policies_for,
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
        """Delete podseg tables left in namespaces of pods that are gone (agent.sync.sweep)."""
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
        except client.DataplaneError as exc:
            metrics.APPLY_ERRORS.labels("sweep").inc()
            log.warning("sweep_failed", error=str(exc))

    async def _forget(self, state: PodState) -> None:
        self._cuts.pop(state.key, None)
        if self.flows is not None:
            self.flows.unwatch(state.key)
        if state.target is not None:
            try:
                await self.dataplane.forget([state.target.ino])
            except client.DataplaneError as exc:
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

    def _service_index(self) -> calc_services.ServiceIndex:
        """The Service frontends, rebuilt only after a Service or EndpointSlice change (they
        do not depend on pods; `problems` is only read right after a rebuild)."""
        if self._services is None:
            self._services = calc_services.build_index(
                self.store.services.values(), self.store.endpointslices.values(), self.store.pods
            )
        return self._services

    def _report_service_problems(self, index: calc_services.ServiceIndex) -> None:
        """Log each bad Service/EndpointSlice input once per object version, and count it."""
        for problem in index.problems:
            marker = (problem.kind, problem.key, problem.resource_version, problem.message)
            if marker in self._reported_services:
                continue
            self._reported_services.add(marker)
            metrics.SERVICE_INPUT_PROBLEMS.labels(problem.kind).inc()
            namespace, _, name = problem.key.partition("/")
            log.warning(
                "service_input_ignored",
                kind=problem.kind,
                namespace=namespace,
                name=name,
                problem=problem.message,
                effect="opens nothing by itself; backends count only by address and port",
            )

    def _update_gauges(self) -> None:
        counts = collections.Counter(state.state for state in self.pods.values())
        for name in ("enforced", "unprotected", "failed"):
            metrics.MANAGED_PODS.labels(name).set(counts.get(name, 0))
        quarantined = collections.Counter(
            key.split("/", 1)[0] for key, s in self.pods.items() if s.quarantined_since is not None
        )
        metrics.QUARANTINED_PODS.clear()
        for namespace, count in quarantined.items():
            metrics.QUARANTINED_PODS.labels(namespace).set(count)

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
            metrics.AGENT_READY.set(1)
            counts = collections.Counter(state.state for state in self.pods.values())
            log.info("agent_ready", local_pods=len(self.pods), **dict(counts))


def _iso(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).isoformat(timespec="milliseconds")
