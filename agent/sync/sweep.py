"""Removes podseg tables left in namespaces whose pod is gone (docs/architecture.md: own what
you create).

An agent that was down while a pod was deleted never saw the delete; if that pod's network
namespace lingers (a sandbox being torn down, a CNI that keeps it, a pod recreated under the
same name elsewhere), our table stays in it. The sweep finds such tables and deletes them, and
it is deliberately timid, because deleting the table of a live pod opens a hole:

* it runs only once the store holds a complete LIST of every kind (the caller guarantees it),
  so "not in the store" means "not in the cluster", never "not seen yet";
* it only touches namespaces that hold a `table inet podseg` carrying our owner comment
  (`podseg fp=<16 hex> pod=<ns>/<name>`), never the host namespace (the worker refuses to
  enter it), never a namespace that is the current target of a local pod;
* the named pod must be gone from the cluster, or exist but hold none of its current IPs in
  that namespace (a stale sandbox of a pod recreated with the same name). A namespace that
  holds the named pod's IPs is that pod's, on this node or (sandbox: one kernel, many "nodes")
  another agent's, and is kept; so is one whose named pod has no IP yet (in doubt, keep).

`select` is the pure decision, unit-tested; `run` is the effectful part through the worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import re
from collections.abc import Collection, Iterable, Mapping, Sequence

import structlog

from agent import config, metrics, model
from agent.dataplane import backends, netns, protocol
from agent.dataplane.nft import render as render_nft

log = structlog.get_logger(__name__)

_OWNER_RE = re.compile(r"^podseg fp=[0-9a-f]{16} pod=(\S+)$")


@dataclasses.dataclass(frozen=True)
class Owned:
    """A namespace holding a podseg table, with the pod its comment names."""

    path: str
    ino: int
    owner: str  # "<ns>/<name>" as written in the comment (sanitised, maybe truncated)
    truncated: bool  # the comment hit the kernel's length limit: `owner` is a prefix
    addrs: frozenset[str]


@dataclasses.dataclass(frozen=True)
class Decision:
    owned: Owned
    reason: str  # "pod_gone" | "stale_sandbox"


def parse_owner(comment: str | None) -> tuple[str, bool] | None:
    """(`<ns>/<name>`, truncated) from an owner comment; None if it is not one of ours."""
    if not comment:
        return None
    match = _OWNER_RE.match(comment)
    if match is None:
        return None
    truncated = len(comment.encode()) >= render_nft.COMMENT_MAX_BYTES
    return match.group(1), truncated


def _norm(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


def _named(owned: Owned, pods: Mapping[str, model.Pod]) -> list[model.Pod]:
    if not owned.truncated:
        pod = pods.get(owned.owner)
        return [pod] if pod is not None else []
    return [pod for key, pod in pods.items() if key.startswith(owned.owner)]


def select(
    found: Iterable[Owned],
    pods: Mapping[str, model.Pod],
    tracked_inos: Collection[int],
) -> list[Decision]:
    """The owned tables to delete. `pods` is the whole cluster's (an in-sync store) keyed by
    `<ns>/<name>`; `tracked_inos` are the namespaces that are current targets of local pods."""
    out: list[Decision] = []
    for owned in found:
        if owned.ino in tracked_inos:
            continue
        named = _named(owned, pods)
        if not named:
            out.append(Decision(owned, "pod_gone"))
            continue
        if any(not pod.ips for pod in named):
            continue  # in doubt (no IP reported yet): keep
        if any(_norm(ip) in owned.addrs for pod in named for ip in pod.ips):
            continue  # the named pod's addresses live here: it is that pod's namespace
        out.append(Decision(owned, "stale_sandbox"))
    return out


def _owned(cand: netns.Candidate, comment: str | None) -> Owned | None:
    parsed = parse_owner(comment)
    if parsed is None:
        return None
    owner, truncated = parsed
    addrs = frozenset(_norm(a) for iface in cand.interfaces for a in iface.addrs)
    return Owned(cand.path, cand.ino, owner, truncated, addrs)


async def guarded(
    dataplane: protocol.Dataplane,
    settings: config.Settings,
    pods: Mapping[str, model.Pod],
    tracked_inos: Collection[int],
    dataplane_backend: backends.Backend,
) -> None:
    """`run` for the reconcile loop: a failure is counted and logged, never raised."""
    try:
        await run(
            dataplane, settings.netns_dir, settings.scan_proc, pods, tracked_inos, dataplane_backend
        )
    except protocol.DataplaneError as exc:
        metrics.APPLY_ERRORS.labels("sweep").inc()
        log.warning("sweep_failed", error=str(exc))


async def run(
    dataplane: protocol.Dataplane,
    netns_dir: str,
    scan_proc: bool,
    pods: Mapping[str, model.Pod],
    tracked_inos: Collection[int],
    dataplane_backend: backends.Backend | None = None,
) -> list[Decision]:
    """Scan every candidate namespace, delete leftover tables, return what was swept.

    Costs one scan plus one table listing per namespace that is not a local pod's target;
    contexts opened for those namespaces are released again so the sweep pins nothing.
    """
    owner = dataplane_backend or backends.Nftables()
    scanned = await dataplane.call(protocol.Scan(netns_dir, scan_proc))
    candidates: Sequence[netns.Candidate] = scanned.candidates
    found: list[Owned] = []
    opened: list[int] = []
    try:
        for cand in candidates:
            if cand.ino in tracked_inos:
                continue
            opened.append(cand.ino)
            target = netns.Target(cand.path, cand.ino, ())
            try:
                comment = (await dataplane.call(owner.comment_request(target))).comment
            except protocol.NetnsGone:
                continue
            owned = _owned(cand, comment)
            if owned is not None:
                found.append(owned)
        decisions = select(found, pods, tracked_inos)
        swept: list[Decision] = []
        for decision in decisions:
            target = netns.Target(decision.owned.path, decision.owned.ino, ())
            try:
                await backends.delete(dataplane, owner, target)
            except protocol.NetnsGone:
                continue
            metrics.SWEPT_TABLES.labels(decision.reason).inc()
            log.info(
                "leftover_table_swept",
                netns=decision.owned.path,
                owner=decision.owned.owner,
                reason=decision.reason,
            )
            swept.append(decision)
        return swept
    finally:
        if opened:
            with contextlib.suppress(protocol.DataplaneError):
                await dataplane.call(protocol.Forget(tuple(opened)))
