"""Where each local pod's rules go, after a scan of the node's namespaces: one `Slot` per
namespace holding the pod's addresses (`agent.dataplane.netns.place` decides, purely), and
what the scan saw there as the ruleset's `Link`.

Why apart from the pass: placing is global (a namespace claimed by two pods is contested, so
one pod's placement depends on the others'), it keeps what the agent knows of a namespace
that stays (no needless rewrite), and it says which namespaces a pod left, whose contexts and
drop readers the pass then releases.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Mapping, MutableMapping
from typing import Any

from agent import config, model, store
from agent.calc import containment, ruleset
from agent.dataplane import backends, netns, protocol
from agent.flows import collector as flows_collector
from agent.sync import pod as sync_pod

# Pods whose containers have all stopped: the kubelet has torn their sandbox down and their
# addresses may already belong to a new pod, so they claim no namespace.
FINISHED = frozenset({"Succeeded", "Failed"})


def placeable(pod: model.Pod) -> bool:
    """Whether `pod` claims the namespaces holding its addresses."""
    return bool(pod.ips) and pod.phase not in FINISHED


def unplaced(pod: model.Pod, state: sync_pod.PodState) -> bool:
    """Whether the pod needs a scan before it can be planned."""
    return not state.slots or state.target_ips != pod.ips


def link_of(target: netns.Target) -> ruleset.Link:
    """What the ruleset needs of the scan of the pod's namespace: the same `Link` object for
    as long as the scan sees the same addresses and routes (`_link`)."""
    return _link(target.link_local, target.routes)


# Every plan of a pod asks for its namespace's link, though it only changes with a scan;
# parsing the routes again each time cost ~0.1 ms a pod and event. Bounded: a node's
# namespaces, a few times over.
@functools.lru_cache(maxsize=4096)
def _link(link_local: tuple[str, ...], routes: tuple[netns.Route, ...]) -> ruleset.Link:
    return containment.link(link_local, [(r.dst, r.gateway, r.interface) for r in routes])


def pin(state: sync_pod.PodState, index: netns.Index, path: str, ips: tuple[str, ...]) -> bool:
    """Place a pod in the one namespace podseg-cni named (`index`: a scan of it alone), when
    it holds the pod's IPs; no scan of the others. The next full placement re-checks it (a
    decoy holding the same addresses is found there). False: it does not hold them."""
    found = [t for t in index.holders(ips) if t.path == path]
    if not found:
        return False
    state.slots = {found[0].ident: sync_pod.Slot(found[0])}
    state.target_ips = ips
    return True


async def pin_announced(
    dataplane: protocol.Dataplane,
    backend: backends.Backend,
    settings: config.Settings,
    cluster: store.Store,
    states: MutableMapping[str, sync_pod.PodState],
    local: Mapping[str, model.Pod],
    due: set[str],
) -> dict[tuple[str, int], protocol.Examined]:
    """Place the unplaced pods podseg-cni announced in the namespace it named, from a scan of
    those namespaces alone (the pod's ADD waits for this pass). Any it cannot place are left to
    the full scan.

    The first-contact read-back of each named namespace (what `agent.sync.kernel` would ask
    next: an earlier agent's table to adopt, foreign base chains) rides in the same worker
    round trip, by the inode the agent stats; returned by (path, inode) for the pass's kernel
    steps, which use it only for a slot the scan placed in that very namespace."""
    hints = cluster.cni_hints
    pinned = [
        key
        for key in due
        if key in hints and hints[key].ips == local[key].ips and unplaced(local[key], states[key])
    ]
    if not pinned:
        return {}
    paths = tuple(sorted({hints[key].netns for key in pinned}))
    inodes = {path: ino for path in paths if (ino := _inode(path)) is not None}
    requests: list[protocol.Request[Any]] = [protocol.Scan(settings.netns_dir, False, paths)]
    requests += [backend.examine_request(netns.Target(p, i, ()), False) for p, i in inodes.items()]
    try:
        scanned, *answers = await dataplane.batch(requests)
    except protocol.DataplaneError:
        return {}
    if isinstance(scanned, protocol.DataplaneError):
        return {}
    index = netns.Index(scanned.candidates)
    for key in pinned:
        pin(states[key], index, hints[key].netns, local[key].ips)
    return {
        (path, ino): answer
        for (path, ino), answer in zip(inodes.items(), answers, strict=True)
        if isinstance(answer, protocol.Examined)
    }


def _inode(path: str) -> int | None:
    """The inode of the namespace file at `path` (a stat, no namespace entered)."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


@dataclasses.dataclass
class Moves:
    """What a placement changed: pods to plan again, and the slots pods left."""

    moved: set[str] = dataclasses.field(default_factory=set)
    left: list[tuple[str, sync_pod.Slot]] = dataclasses.field(default_factory=list)


def update(
    states: MutableMapping[str, sync_pod.PodState],
    local: Mapping[str, model.Pod],
    index: netns.Index,
) -> Moves:
    """Place every placeable local pod (`states` gains a state for each), keeping the slots
    of namespaces that stay and what the agent knows of them."""
    pods = {key: pod.ips for key, pod in local.items() if placeable(pod)}
    held = {key: [s.target for s in states[key].slots.values()] for key in pods if key in states}
    placed = netns.place(index, pods, held)
    moves = Moves()
    for key, pod in local.items():
        state = states.setdefault(key, sync_pod.PodState(key))
        slots: dict[tuple[str, int], sync_pod.Slot] = {}
        for placement in placed.get(key, ()):
            ident = placement.target.ident
            slot = state.slots.get(ident)
            if slot is None or slot.lockdown != placement.lockdown:
                slot = sync_pod.Slot(placement.target, placement.lockdown)
                moves.moved.add(key)
            elif slot.target != placement.target:
                slot.target = placement.target  # the ruleset follows what the scan saw
                moves.moved.add(key)
            slots[ident] = slot
        moves.left += [(key, s) for ident, s in state.slots.items() if slots.get(ident) is not s]
        if slots.keys() != state.slots.keys():
            moves.moved.add(key)
        state.slots = slots
        if key in pods:
            state.target_ips = pod.ips
    return moves


async def place(
    dataplane: protocol.Dataplane,
    index: netns.Index,
    states: MutableMapping[str, sync_pod.PodState],
    local: Mapping[str, model.Pod],
    flows: flows_collector.Collector | None,
) -> Moves:
    """`update` the placements from a scan's `index`; release what pods left (the worker's
    contexts, the drop reader's sockets)."""
    keys = {k: {flow_key(s, slot) for slot in s.slots.values()} for k, s in states.items()}
    moves = update(states, local, index)
    for _key, slot in moves.left:
        with contextlib.suppress(protocol.DataplaneError):
            await dataplane.call(protocol.Forget((slot.target.ino,)))
    if flows is not None:
        for key in moves.moved:
            state = states[key]
            kept = {flow_key(state, slot) for slot in state.slots.values()}
            for gone in keys.get(key, set()) - kept:
                flows.unwatch(gone)
    return moves


def flow_key(state: sync_pod.PodState, slot: sync_pod.Slot) -> str:
    """The drop reader's key of one slot: the pod's key for its first namespace, the key and
    the namespace's inode for any other (`<ns>/<name>@<inode>`)."""
    first = next(iter(state.slots.values()), None)
    return state.key if first is slot else f"{state.key}@{slot.target.ino}"


def summary(state: sync_pod.PodState) -> tuple[str, ...]:
    """The paths of the pod's namespaces when there is more than one, or a contested one
    (what is reported, once per change); empty otherwise."""
    slots = list(state.slots.values())
    if len(slots) < 2 and not any(s.lockdown for s in slots):
        return ()
    return tuple(f"{s.target.path}{' (locked down)' if s.lockdown else ''}" for s in slots)
