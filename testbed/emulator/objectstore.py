"""In-memory object storage with one global resourceVersion and a bounded event history.

This plays etcd plus the watch cache: every write bumps the global RV, is appended to the
history window and is pushed to live watchers.  A watch may resume from any RV still inside
the window; older RVs are "compacted" and get 410 Expired.  Not thread-safe: only the
emulator's event loop calls it.  Stored dicts are treated as immutable (writes replace them).
The server's source of truth, not to be confused with `agent.store`, the agent's mirror of it.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

from testbed.emulator import resources, watchcache

ObjKey = tuple[str, str]  # (namespace, name); namespace is "" for cluster-scoped objects


def obj_key(obj: dict[str, Any]) -> ObjKey:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


class Store:
    def __init__(self, history: int = 10000, start_rv: int = 0) -> None:
        if history < 1:
            raise ValueError("history must be at least 1")
        self.rv = start_rv
        self.history_limit = history
        # All events with rv <= compacted_rv are gone from the history window.
        self.compacted_rv = start_rv
        # What is served: the built-in kinds and those of CustomResourceDefinitions.
        self.catalogue = resources.Catalogue()
        # One table per (group, plural), shared by all versions of a kind; made on first use.
        self._objects: dict[tuple[str, str], dict[ObjKey, dict[str, Any]]] = {}
        self._history: collections.deque[watchcache.Event] = collections.deque()
        self._watchers: set[watchcache.Watcher] = set()
        # Each table's keys in order, kept until a key comes or goes: a paged LIST of 10,000
        # pods asks for them once per page (sorting per page made the pages quadratic).
        self._ordered: dict[tuple[str, str], list[ObjKey]] = {}

    # --- reads ------------------------------------------------------------------------

    def get(self, rt: resources.ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        return self._table(rt).get((namespace if rt.namespaced else "", name))

    def items(
        self, rt: resources.ResourceType, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """Objects of ``rt`` (in ``namespace`` if given) in (namespace, name) order."""
        table = self._table(rt)
        return [table[key] for key in self.keys(rt) if namespace is None or key[0] == namespace]

    def keys(self, rt: resources.ResourceType) -> list[ObjKey]:
        """The keys of ``rt``'s objects in (namespace, name) order (do not modify)."""
        ordered = self._ordered.get(rt.key)
        if ordered is None:
            ordered = self._ordered[rt.key] = sorted(self._table(rt))
        return ordered

    def _table(self, rt: resources.ResourceType) -> dict[ObjKey, dict[str, Any]]:
        table = self._objects.get(rt.key)
        if table is None:
            table = self._objects[rt.key] = {}
        return table

    def events_after(self, rv: int) -> Iterator[watchcache.Event]:
        """History events newer than ``rv``; caller must check ``rv >= compacted_rv``."""
        for event in self._history:
            if event.rv > rv:
                yield event

    # --- writes -----------------------------------------------------------------------

    def _commit(
        self,
        kind: str,
        rt: resources.ResourceType,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
    ) -> dict[str, Any]:
        self.rv += 1
        stored = watchcache.with_rv(obj, self.rv)
        key = obj_key(stored)
        table = self._table(rt)
        if kind == watchcache.DELETED:
            del table[key]
            self._ordered.pop(rt.key, None)
        else:
            if key not in table:
                self._ordered.pop(rt.key, None)
            table[key] = stored
        event = watchcache.Event(self.rv, kind, rt, stored, old)
        self._history.append(event)
        while len(self._history) > self.history_limit:
            self.compacted_rv = self._history.popleft().rv
        for watcher in list(self._watchers):
            flt = watcher.filter
            if flt.rt.key == rt.key and (flt.namespace is None or flt.namespace == key[0]):
                watcher.push(event)
        return stored

    def create(self, rt: resources.ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        return self._commit(watchcache.ADDED, rt, obj, None)

    def update(
        self, rt: resources.ResourceType, obj: dict[str, Any], old: dict[str, Any]
    ) -> dict[str, Any]:
        return self._commit(watchcache.MODIFIED, rt, obj, old)

    def delete(self, rt: resources.ResourceType, old: dict[str, Any]) -> dict[str, Any]:
        return self._commit(watchcache.DELETED, rt, old, old)

    # --- watchers ---------------------------------------------------------------------

    def add_watcher(self, watcher: watchcache.Watcher) -> None:
        self._watchers.add(watcher)

    def remove_watcher(self, watcher: watchcache.Watcher) -> None:
        self._watchers.discard(watcher)

    def drop_kind(self, rt: resources.ResourceType) -> int:
        """A kind stops being served: delete its objects (DELETED is sent for each, as the
        CustomResourceDefinition cleanup of the real server does), then end the watches on it.
        Returns the objects deleted."""
        deleted = 0
        for obj in self.items(rt):
            self.delete(rt, obj)
            deleted += 1
        for watcher in [w for w in self._watchers if w.filter.rt.key == rt.key]:
            watcher.close()
            self._watchers.discard(watcher)
        self._objects.pop(rt.key, None)
        self._ordered.pop(rt.key, None)
        return deleted

    def close_watchers(self) -> int:
        """End every open watch stream cleanly; returns how many there were."""
        watchers = list(self._watchers)
        for watcher in watchers:
            watcher.close()
        self._watchers.clear()
        return len(watchers)

    def compact(self) -> None:
        """Forget the whole history window so any resume from an older RV gets 410."""
        self._history.clear()
        self.compacted_rv = self.rv

    def restart(self, jump: int = 1_000_000) -> int:
        """Fault: an API server restart that renumbers everything (say, a restore of etcd).

        Every open watch ends, every object keeps its content but gets a new
        resourceVersion far above any old one, and the history starts empty, so resuming
        from any version handed out before answers 410 Expired (clients must relist).
        No watch events are sent for the renumbering.  Returns the watches closed.
        """
        closed = self.close_watchers()
        self.rv += jump
        for table in self._objects.values():
            for key in sorted(table):
                self.rv += 1
                table[key] = watchcache.with_rv(table[key], self.rv)
        self._history.clear()
        self.compacted_rv = self.rv
        return closed

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)
