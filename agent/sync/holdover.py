"""Holdover: what an agent does while it has never reached the API server since it started.

Why: the reconciler computes every ruleset from a complete picture of the cluster, so it writes
nothing before every initial LIST is done. An agent restarted while the API server is
unreachable (a control-plane outage, a partitioned node) would then repair nothing: a pod with
NET_ADMIN could delete podseg's table and stay open until the API server comes back. The rules
of the previous agent are still in the kernel, each table tagged with the fingerprint of the
ruleset it holds (`podseg fp=... pod=<ns>/<name>`); holdover keeps exactly those.

Once the store has not come in sync `HOLDOVER_AFTER` seconds after start, holdover scans the
candidate namespaces for podseg's tables and snapshots each (its stateless listing, which loads
back into the same listing, and its digest: `protocol.Snapshot`). It watches them for nftables
commits (`agent.sync.tamper`), and on a stranger's commit, or at each resync, reads the
namespace back: a digest that differs from the snapshot's is drift, and the snapshot is
committed again in one transaction, counted (`podseg_ruleset_drift_total`) and logged
(`ruleset_drift`, `restored="holdover"`; no Event: the API server is what is missing). The agent
stays not Ready throughout. When the store comes in sync the reconciler takes over (it adopts
tables whose fingerprint is current and rewrites the others) and holdover ends.

What holdover cannot do: restore a table that was already gone or edited when it took its
snapshot, or answer a foreign base chain by moving the egress drop (that needs the desired
ruleset); it is nftables only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import structlog

from agent import config, metrics
from agent.dataplane import netns, protocol
from agent.sync import tamper

log = structlog.get_logger(__name__)

HOLDOVER_AFTER = 2.0  # seconds without a complete LIST before the kernel's rules are held
PREFIX = "holdover:"  # change-watch keys of held namespaces (pod keys never contain a colon)


@dataclasses.dataclass
class Kept:
    target: netns.Target
    script: str
    digest: str | None
    owner: str | None  # the table's owner comment


class Holdover:
    def __init__(
        self, settings: config.Settings, dataplane: protocol.Dataplane, watch: tamper.Watch
    ) -> None:
        self.settings = settings
        self.dataplane = dataplane
        self.watch = watch
        self.kept: dict[str, Kept] = {}
        self.started_at = time.monotonic()
        self.active = False
        self.ended = False

    def due(self) -> float:
        """When the loop must wake to start holdover (inf: started, ended or not wanted)."""
        if self.active or self.ended or self.settings.backend != "nftables":
            return float("inf")
        return self.started_at + HOLDOVER_AFTER

    async def step(self, suspects: set[str], verify: bool) -> None:
        """Called by the loop while the store is not in sync: start holdover once it is due,
        then check the held namespaces that were notified (all of them with `verify`)."""
        if not self.active:
            if time.monotonic() >= self.due():
                await self._start()
            return
        for key in sorted(self.kept):
            if verify or key in suspects:
                await self._check(key)

    def end(self) -> None:
        """The store is in sync: the reconciler owns every namespace from now on."""
        if self.ended:
            return
        self.ended = True
        for key in self.kept:
            self.watch.drop(key)
        if self.active:
            log.info("holdover_ended", namespaces=len(self.kept))
        self.kept.clear()
        self.active = False
        metrics.HOLDOVER_NAMESPACES.set(0)

    async def _start(self) -> None:
        self.active = True
        try:
            scanned = await self.dataplane.call(
                protocol.Scan(self.settings.netns_dir, self.settings.scan_proc)
            )
        except protocol.DataplaneError as exc:
            self.active = False  # try again at the next wake-up
            self.started_at = time.monotonic()
            log.warning("holdover_scan_failed", error=str(exc))
            return
        seen: set[int] = set()
        for cand in scanned.candidates:
            if cand.ino in seen:
                continue
            seen.add(cand.ino)
            await self._hold(netns.Target(cand.path, cand.ino, ()))
        metrics.HOLDOVER_NAMESPACES.set(len(self.kept))
        log.warning(
            "holdover_started",
            namespaces=len(self.kept),
            reason="no complete LIST from the API server yet: holding the kernel's rules",
        )

    async def _hold(self, target: netns.Target) -> None:
        try:
            held = await self.dataplane.call(protocol.Snapshot(target.path, target.ino))
        except protocol.DataplaneError as exc:
            log.warning("holdover_snapshot_failed", netns=target.path, error=str(exc))
            held = None
        if held is None or held.script is None:
            with contextlib.suppress(protocol.DataplaneError):
                await self.dataplane.call(protocol.Forget((target.ino,)))
            return
        key = f"{PREFIX}{target.ino}"
        self.kept[key] = Kept(target, held.script, held.digest, held.comment)
        self.watch.follow(key, target)
        log.info("holdover_holding", netns=target.path, owner=held.comment)

    async def _check(self, key: str) -> None:
        kept = self.kept[key]
        target = kept.target
        try:
            now = await self.dataplane.call(protocol.Snapshot(target.path, target.ino))
            if now.digest == kept.digest:
                return
            done = await self.dataplane.call(protocol.Commit(target.path, target.ino, kept.script))
        except protocol.NetnsGone:
            log.info("holdover_netns_gone", netns=target.path, owner=kept.owner)
            self.watch.drop(key)
            del self.kept[key]
            metrics.HOLDOVER_NAMESPACES.set(len(self.kept))
            return
        except protocol.DataplaneError as exc:
            metrics.APPLY_ERRORS.labels("holdover").inc()
            log.warning("holdover_restore_failed", netns=target.path, error=str(exc))
            return
        self.watch.own(key, done.generation)
        metrics.RULESET_DRIFT.inc()
        log.warning(
            "ruleset_drift",
            netns=target.path,
            owner=kept.owner,
            found=now.digest,
            restored="holdover",
        )
