"""Cutting connections a new ruleset no longer allows: after a quarantine (always) and, in
strict mode, after any change that may have removed an allow.

Why after the pass: with `ct state established accept` in place, a connection whose conntrack
entry survives would live on, so its entry is deleted (quarantine: the next packet meets the
quarantine chains) or marked denied (strict: every later packet is judged again). Listing a
namespace's conntrack table costs 12-40 ms (the kernel walks its global table), so cuts run
after every affected pod's rules are committed, and strict-mode cuts yield to waiting API
events, never delaying the next change's enforcement.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import structlog

from agent import metrics, model
from agent.calc import ruleset, verdict
from agent.dataplane import netns, protocol
from agent.dataplane.nft import render as render_nft
from agent.sync import pod as sync_pod
from agent.sync import report


@dataclasses.dataclass
class Cut:
    """Connections of one pod to cut once the pass has committed every affected pod."""

    pod: model.Pod
    target: netns.Target  # one namespace of the pod
    rs: ruleset.PodRuleset
    reason: str  # "quarantine" (delete the entries) or "strict" (mark them denied)
    bound: structlog.typing.FilteringBoundLogger
    # strict: the ruleset before the change; the cut happens only if the change removed an
    # allow (checked when the cut runs, off the path to enforcement)
    previous: ruleset.PodRuleset | None = None


class Cuts:
    """The cuts waiting to run, by pod."""

    def __init__(self, dataplane: protocol.Dataplane, reporter: report.Reporter, strict: bool):
        self.dataplane = dataplane
        self.reporter = reporter
        self.strict = strict
        self.waiting: dict[tuple[str, int], Cut] = {}  # by (pod key, namespace inode)

    def __bool__(self) -> bool:
        return bool(self.waiting)

    def drop(self, key: str) -> None:
        for waiting in [w for w in self.waiting if w[0] == key]:
            del self.waiting[waiting]

    def after_commit(
        self,
        pod: model.Pod,
        state: sync_pod.PodState,
        slot: sync_pod.Slot,
        previous: ruleset.PodRuleset | None,
        rs: ruleset.PodRuleset,
        latency: float | None,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        """Quarantine bookkeeping (Events when it starts or ends), then schedule a cut of the
        connections in `slot`'s namespace that are now illegal: always for a new quarantine
        (`previous`: what this agent committed there before, None: nothing), in strict mode
        when the change may have removed an allow."""
        if not slot.lockdown:  # a contested namespace's lockdown is no quarantine of the pod
            self._report_quarantine(pod, state, rs, latency, bound)
        reason = ""
        if rs.quarantine is not None and (previous is None or previous.quarantine != rs.quarantine):
            reason = "quarantine"  # new, or its forensic sources changed
        elif self.strict and previous is not None:
            reason = "strict"  # if the change removed an allow: decided when the cut runs
        if not reason:
            return
        key = (pod.key, slot.target.ino)
        earlier = self.waiting.get(key)
        if earlier is not None:  # not cut yet: one cut covers both changes
            previous = earlier.previous
            reason = "quarantine" if "quarantine" in (reason, earlier.reason) else reason
        self.waiting[key] = Cut(pod, slot.target, rs, reason, bound, previous)

    def _report_quarantine(
        self,
        pod: model.Pod,
        state: sync_pod.PodState,
        rs: ruleset.PodRuleset,
        latency: float | None,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        """The pod's quarantine began or ended: an Event, once."""
        if rs.quarantine is not None and state.quarantined_since is None:
            state.quarantined_since = time.time()
            self.reporter.quarantined(pod, state.quarantined_since, rs.quarantine, latency, bound)
        elif rs.quarantine is None and state.quarantined_since is not None:
            held = time.time() - state.quarantined_since
            self.reporter.quarantine_lifted(pod, state.quarantined_since, held, bound)
            state.quarantined_since = None

    async def run(self, events_waiting: Callable[[], bool]) -> None:
        """Delete (quarantine) or mark denied (strict) the conntrack entries of the waiting
        pods that their new rulesets no longer allow. Quarantine cuts all run now; strict-mode
        cuts yield to waiting API events: at least one runs per call, the rest as soon as no
        event waits."""
        ran = 0
        for key in sorted(self.waiting, key=lambda k: (self.waiting[k].reason != "quarantine", k)):
            job = self.waiting[key]
            if job.reason != "quarantine" and ran and events_waiting():
                return
            del self.waiting[key]
            ran += 1
            if job.reason == "strict" and not verdict.removes_allows(job.previous, job.rs):
                continue  # the change only added allows: no connection became illegal
            await self._cut(job)

    async def _cut(self, job: Cut) -> None:
        started = time.monotonic()
        path, ino = job.target.path, job.target.ino
        try:
            entries = (await self.dataplane.call(protocol.ConntrackList(path, ino))).entries
            doomed = tuple(verdict.illegal(job.rs, job.pod.ips, entries))
            cut = 0
            if doomed and job.reason == "quarantine":
                # Deleted: the quarantine chains sit before any conntrack shortcut, so whatever
                # the next packet of such a connection is, it is dropped.
                request: protocol.Request[protocol.Count] = protocol.ConntrackDelete(
                    path, ino, doomed
                )
                cut = (await self.dataplane.call(request)).count
            elif doomed:
                mark = protocol.ConntrackMark(path, ino, doomed, render_nft.DENY_MARK)
                cut = (await self.dataplane.call(mark)).count
        except protocol.DataplaneError as exc:
            metrics.APPLY_ERRORS.labels("conntrack").inc()
            job.bound.warning("connections_cut_failed", reason=job.reason, error=str(exc))
            return
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
