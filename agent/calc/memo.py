"""A bounded memo keyed by the identity of the objects a result was made from.

Why: the local pods whose policies resolve to the same peers hold the very same canonical
tuples (the calculator shares them), and a cluster's Node objects stay the same objects until
one changes; work made from such objects (formatting a peer tuple's elements, splicing a
changed stretch into a set, reading every node's addresses) is the same for each pod, so it is
done once and looked up by the objects' ids. Each entry holds the objects its key names, so an
id is never reused while the entry is kept; the oldest entry goes first past `most`. Only
immutable objects may be keys (tuples, frozen dataclasses): a changed object is a new key.
Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ByIdentity(Generic[T]):
    """The last `most` results, by a few plain values and the identity of `held` objects."""

    def __init__(self, most: int) -> None:
        self.most = most
        self._entries: dict[tuple[Hashable, ...], tuple[tuple[Any, ...], T]] = {}

    def get(self, values: tuple[Hashable, ...], held: tuple[Any, ...], make: Callable[[], T]) -> T:
        """What `make()` gave for the same `values` and the very same `held` objects, or
        `make()` now (kept)."""
        key = (*values, *map(id, held))
        hit = self._entries.get(key)
        if hit is not None:
            return hit[1]
        made = make()
        if len(self._entries) >= self.most:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (held, made)
        return made

    def clear(self) -> None:
        self._entries.clear()
