"""The kernel work of a pass: a few batched dataplane round trips for every affected pod.

Why batched: a pass may touch hundreds of pods; one worker round trip per step (generation
checks, read-backs, patches, whole-table replaces) instead of one per pod keeps the kernel
part of a pass close to the kernel's own cost. Each request of a batch succeeds or fails on
its own, so one vanished namespace never holds back the others; a worker timeout fails every
pod still in the batch. What each answer means for a pod is decided by `agent.sync.pod`;
this module sends the requests and tells its caller (`Outcomes`) what happened.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol

from agent import metrics
from agent.dataplane import backends, protocol
from agent.sync import pod as sync_pod


class Outcomes(Protocol):
    """What the pass does with the events of the kernel steps (logs, Events, metrics)."""

    def failed(self, plan: sync_pod.Plan, exc: Exception) -> None: ...

    def adopted(self, plan: sync_pod.Plan) -> None: ...

    def drift(self, plan: sync_pod.Plan, expected: str | None, found: str | None) -> None: ...

    def foreign(self, plan: sync_pod.Plan, before: tuple[str, ...]) -> None: ...


# What a namespace held, read in an earlier round trip of the same pass (by `Target.ident`):
# podseg-cni's named namespaces, read back with their scan (`placement.pin_announced`).
Read = Mapping[tuple[str, int], protocol.Examined]


async def run(
    plans: Sequence[sync_pod.Plan],
    dataplane: protocol.Dataplane,
    backend: backends.Backend,
    outcomes: Outcomes,
    read: Read | None = None,
) -> None:
    """Generation checks, read-backs (none for a first contact already `read`), then
    commits. Never raises: a failure fails the plans it touched."""
    known: Read = read or {}

    async def examine(
        plans: list[sync_pod.Plan],
        dataplane: protocol.Dataplane,
        backend: backends.Backend,
        outcomes: Outcomes,
    ) -> None:
        await _examine(plans, dataplane, backend, outcomes, known)

    steps = (_check_generations, examine, _commit)
    for step in steps:
        try:
            await step([p for p in plans if not p.failed], dataplane, backend, outcomes)
        except Exception as exc:  # the whole batch (worker timeout): every pod still in it
            for plan in plans:
                if not plan.failed and not plan.done:
                    _fail(plan, exc, outcomes)


def _fail(plan: sync_pod.Plan, exc: Exception, outcomes: Outcomes) -> None:
    plan.failed = True
    outcomes.failed(plan, exc)


async def _check_generations(
    plans: list[sync_pod.Plan],
    dataplane: protocol.Dataplane,
    backend: backends.Backend,
    outcomes: Outcomes,
) -> None:
    checks = [p for p in plans if sync_pod.wants_generation(p)]
    if not checks:
        return
    replies = await dataplane.batch(
        [protocol.ReadGeneration(p.target.path, p.target.ino) for p in checks]
    )
    for plan, reply in zip(checks, replies, strict=True):
        if isinstance(reply, protocol.DataplaneError):
            _fail(plan, reply, outcomes)
        else:
            sync_pod.after_generation(plan, reply)


async def _examine(
    plans: list[sync_pod.Plan],
    dataplane: protocol.Dataplane,
    backend: backends.Backend,
    outcomes: Outcomes,
    known: Read,
) -> None:
    reads = [p for p in plans if sync_pod.wants_examine(p)]
    if not reads:
        return
    # A first contact whose namespace this pass has read already needs no round trip.
    ready = [p for p in reads if not p.verify and p.target.ident in known]
    asked = [p for p in reads if p.verify or p.target.ident not in known]
    replies: list[protocol.Examined | protocol.DataplaneError] = [
        known[p.target.ident] for p in ready
    ]
    if asked:
        answers = await dataplane.batch(
            [backend.examine_request(p.target, whole=p.verify) for p in asked]
        )
        replies.extend(answers)
    for plan, reply in zip(ready + asked, replies, strict=True):
        if isinstance(reply, protocol.DataplaneError):
            _fail(plan, reply, outcomes)
            continue
        if reply.foreign != plan.slot.foreign:
            # Foreign hooks came or went: the ruleset drops denied egress elsewhere now.
            before, plan.slot.foreign = plan.slot.foreign, reply.foreign
            plan.rendered = backend.render(plan.rs, sync_pod.interfaces(plan.slot))
            outcomes.foreign(plan, before)
        expected = plan.slot.fingerprint
        finding = sync_pod.examine(plan, reply)
        if finding is sync_pod.Finding.ADOPTED:
            outcomes.adopted(plan)
        elif finding is sync_pod.Finding.DRIFT:
            outcomes.drift(plan, expected, reply.fingerprint)
            plan.slot.unknown()


async def _commit(
    plans: list[sync_pod.Plan],
    dataplane: protocol.Dataplane,
    backend: backends.Backend,
    outcomes: Outcomes,
) -> None:
    """Commit every plan whose ruleset is not in place: incrementally when only set elements
    changed since our last commit and nobody else committed in the namespace since, else by
    replacing the tables; a refused patch is replaced in the same pass."""
    pending = [p for p in plans if sync_pod.pending(p)]
    for plan in pending:
        plan.patch = sync_pod.patch_request(plan.slot, plan.rendered, backend)
    patches = [p for p in pending if p.patch is not None]
    replaces = [p for p in pending if p.patch is None]
    if patches:
        replaces += await _patch(patches, dataplane, backend, outcomes)
    if replaces:
        await _replace(replaces, dataplane, backend, outcomes)


async def _patch(
    plans: list[sync_pod.Plan],
    dataplane: protocol.Dataplane,
    backend: backends.Backend,
    outcomes: Outcomes,
) -> list[sync_pod.Plan]:
    """Send the patches; return the plans that must be replaced instead (counted by reason:
    `failed`, the dataplane refused it, e.g. a set missing; `unvouched`, it ran but the
    namespace was not (or is no longer) exactly what the agent committed)."""
    requests = [p.patch for p in plans if p.patch is not None]
    replies = await dataplane.batch(requests)
    arrived = time.monotonic()
    refused: list[sync_pod.Plan] = []
    for plan, reply in zip(plans, replies, strict=True):
        if isinstance(reply, protocol.ApplyFailed):  # nft: atomic; ipt: reads as unknown
            plan.bound.warning("incremental_update_failed", error=str(reply))
            reason = "failed"
        elif isinstance(reply, protocol.DataplaneError):
            _fail(plan, reply, outcomes)
            continue
        elif sync_pod.after_patch(plan, reply, arrived):
            continue
        else:
            reason = "unvouched"
        metrics.RULESET_UPDATES.labels("patch_refused").inc()
        metrics.PATCH_FALLBACKS.labels(backend.name, reason).inc()
        refused.append(plan)
    return refused


async def _replace(
    plans: list[sync_pod.Plan],
    dataplane: protocol.Dataplane,
    backend: backends.Backend,
    outcomes: Outcomes,
) -> None:
    replies = await dataplane.batch(
        [backend.commit_request(p.target, p.rendered, read_back=bool(p.seen)) for p in plans]
    )
    arrived = time.monotonic()
    for plan, reply in zip(plans, replies, strict=True):
        if isinstance(reply, protocol.DataplaneError):
            _fail(plan, reply, outcomes)
        elif sync_pod.after_replace(plan, reply, arrived):
            current = plan.rendered.fingerprint
            outcomes.drift(plan, current, current)
