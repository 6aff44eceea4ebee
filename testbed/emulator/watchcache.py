"""The server half of watches, after kube-apiserver's watch cache: the events the object store
records and, per stream, the filter and queue.

A Watcher receives every write to its resource (pushed synchronously by the object store, so
queue order is RV order) and translates it for its own selectors: an object that stops matching
is delivered as DELETED and one that starts matching as ADDED, as the real watch cache does.
The client half, the agent's list-then-watch, is `agent.k8s.watch`.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from typing import Any

from testbed.emulator import queryselectors, resources

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"
BOOKMARK = "BOOKMARK"
ERROR = "ERROR"


@dataclasses.dataclass(frozen=True)
class Event:
    """One committed write.  ``obj`` is the new state (the final state for DELETED) and
    ``old`` the previous state (None for ADDED).  Both dicts are never mutated afterwards."""

    rv: int
    type: str
    rt: resources.ResourceType
    obj: dict[str, Any]
    old: dict[str, Any] | None

    @property
    def namespace(self) -> str:
        meta = self.obj.get("metadata") or {}
        return str(meta.get("namespace") or "")


@dataclasses.dataclass
class Filter:
    """Which objects a list or watch request wants: resource, namespace and selectors."""

    rt: resources.ResourceType
    namespace: str | None = None
    labels: queryselectors.LabelSelector = dataclasses.field(
        default_factory=queryselectors.LabelSelector
    )
    fields: queryselectors.FieldSelector = dataclasses.field(
        default_factory=queryselectors.FieldSelector
    )

    def matches(self, obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        if not self.labels.matches(meta.get("labels")):
            return False
        if self.fields.requirements:
            visible = queryselectors.field_set(obj, self.rt.field_labels, self.rt.namespaced)
            if not self.fields.matches(visible):
                return False
        return True


def with_rv(obj: dict[str, Any], rv: int) -> dict[str, Any]:
    """A shallow copy of ``obj`` whose metadata.resourceVersion is ``rv``."""
    out = dict(obj)
    out["metadata"] = {**(obj.get("metadata") or {}), "resourceVersion": str(rv)}
    return out


class Watcher:
    """The queue behind one watch stream.  Only touched from the event loop thread."""

    def __init__(self, flt: Filter) -> None:
        self.filter = flt
        self.pending: collections.deque[Event] = collections.deque()
        self.wakeup = asyncio.Event()
        self.closed = False

    def push(self, event: Event) -> None:
        self.pending.append(event)
        self.wakeup.set()

    def close(self) -> None:
        self.closed = True
        self.wakeup.set()

    def translate(self, event: Event) -> tuple[str, dict[str, Any]] | None:
        """The (type, object) this stream should see for ``event``, or None."""
        rt = self.filter.rt
        if event.rt.key != rt.key:
            return None
        now = self.filter.matches(event.obj)
        if event.type == ADDED:
            return (ADDED, resources.present(rt, event.obj)) if now else None
        if event.type == DELETED:
            return (DELETED, resources.present(rt, event.obj)) if now else None
        before = event.old is not None and self.filter.matches(event.old)
        if now and before:
            return (MODIFIED, resources.present(rt, event.obj))
        if now:
            return (ADDED, resources.present(rt, event.obj))
        if before and event.old is not None:
            return (DELETED, resources.present(rt, with_rv(event.old, event.rv)))
        return None
