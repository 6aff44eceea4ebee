"""The worker's conntrack operations: list a namespace's connections, delete some (quarantine)
or mark them denied (strict mode). Conntrack tables are per namespace."""

from __future__ import annotations

import dataclasses

from agent.dataplane import conntrack, protocol
from agent.dataplane.worker import namespaces


def _dump() -> tuple[protocol.ConntrackEntry, ...]:
    if conntrack.tracked_here() == 0:
        return ()  # nothing to list: spare the walk of the global table
    with conntrack.Conntrack() as ct:
        return tuple(protocol.ConntrackEntry(**entry) for entry in ct.dump())


def list_entries(
    ns: namespaces.Namespaces, request: protocol.ConntrackList
) -> protocol.ConntrackEntries:
    with ns.entered(request.path, request.ino):
        return protocol.ConntrackEntries(_dump())


def delete(ns: namespaces.Namespaces, request: protocol.ConntrackDelete) -> protocol.Count:
    """Delete the given entries; the count is of those still there."""
    with ns.entered(request.path, request.ino), conntrack.Conntrack() as ct:
        return protocol.Count(
            sum(1 for entry in request.entries if ct.delete(dataclasses.asdict(entry)))
        )


def mark(ns: namespaces.Namespaces, request: protocol.ConntrackMark) -> protocol.Count:
    """OR `mark` into the given entries' marks; the count is of those still there."""
    with ns.entered(request.path, request.ino), conntrack.Conntrack() as ct:
        return protocol.Count(
            sum(
                1
                for entry in request.entries
                if ct.set_mark(dataclasses.asdict(entry), request.mark)
            )
        )
