"""An in-memory dataplane that speaks `agent.dataplane.protocol` like the real worker, for
testing the sync layer without root.

Each fake namespace remembers the last nftables script committed in it (its "tables"), the
fingerprint that script carries, and an nftables generation that every commit moves by one,
as the kernel's does. Tests change a namespace behind the agent's back (`tamper`,
`drop_tables`, `foreign_commit`, `hook`), make it vanish, or make the next round trip time
out, and look at the requests the agent sent (`sent`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any, TypeVar, cast

from agent.dataplane import netns, protocol
from agent.dataplane.nft import render as render_nft

R = TypeVar("R")


@dataclasses.dataclass
class FakeNetns:
    path: str
    ino: int
    interfaces: tuple[netns.Interface, ...]
    tables: str = ""  # the committed script ("" = no table of ours)
    fingerprint: str | None = None
    generation: int = 1
    gone: bool = False
    raced: bool = False  # another commit slips in right after the next patch
    foreign: tuple[str, ...] = ()  # others' base chains that could undo the egress decision
    connections: list[protocol.ConntrackEntry] = dataclasses.field(default_factory=list)

    def digest(self) -> str | None:
        if not self.tables:
            return None
        return hashlib.sha256(self.tables.encode()).hexdigest()[:32]

    def commit(self, tables: str, fingerprint: str | None) -> None:
        self.tables, self.fingerprint = tables, fingerprint
        self.generation += 1


class FakeDataplane:
    """Implements `protocol.Dataplane`."""

    def __init__(self) -> None:
        self.namespaces: dict[int, FakeNetns] = {}
        self.sent: list[protocol.Request[Any]] = []  # every request, batch parts included
        self.trips = 0  # round trips (a batch is one)
        self.hang_next = 0  # the next N round trips time out
        self.refuse = False  # every commit fails as nft would refuse it
        self.host: tuple[str, ...] = ()  # the addresses of the worker's own namespace
        self._next_ino = 1000

    # -- the test's side ------------------------------------------------------------------
    def add(self, ip: str, *, name: str = "", interface: str = "eth0") -> FakeNetns:
        """A pod namespace holding `ip` on `interface`."""
        self._next_ino += 1
        ns = FakeNetns(
            path=f"/run/netns/{name or f'psg-fake-{self._next_ino}'}",
            ino=self._next_ino,
            interfaces=(netns.Interface(interface, (ip,)),),
        )
        self.namespaces[ns.ino] = ns
        return ns

    def holding(self, ip: str) -> FakeNetns:
        return next(
            ns for ns in self.namespaces.values() if any(ip in i.addrs for i in ns.interfaces)
        )

    def ops(self) -> list[protocol.Op]:
        return [request.op for request in self.sent]

    @staticmethod
    def tamper(ns: FakeNetns) -> None:
        """Someone edits our table but keeps its fingerprint (a rule slipped in)."""
        ns.commit(ns.tables + "# added behind podseg's back\n", ns.fingerprint)

    @staticmethod
    def drop_tables(ns: FakeNetns) -> None:
        """Someone deletes our tables (`nft delete table inet podseg`)."""
        ns.commit("", None)

    @staticmethod
    def foreign_commit(ns: FakeNetns) -> None:
        """Someone commits something unrelated in the namespace (its generation moves)."""
        ns.generation += 1

    @staticmethod
    def hook(ns: FakeNetns, *chains: str) -> None:
        """Someone hooks base chains of their own where they could undo the egress decision
        (none: removes them); one commit."""
        ns.foreign = tuple(sorted(chains))
        ns.generation += 1

    # -- protocol.Dataplane ---------------------------------------------------------------
    async def call(self, request: protocol.Request[R]) -> R:
        self._trip()
        self.sent.append(request)
        return cast(R, self._handle(request))

    async def batch(
        self, requests: Sequence[protocol.Request[R]]
    ) -> list[R | protocol.DataplaneError]:
        self._trip()
        out: list[R | protocol.DataplaneError] = []
        for request in requests:
            self.sent.append(request)
            try:
                out.append(cast(R, self._handle(request)))
            except protocol.DataplaneError as exc:
                out.append(exc)
        return out

    def _trip(self) -> None:
        self.trips += 1
        if self.hang_next:
            self.hang_next -= 1
            raise protocol.WorkerTimeout("fake worker did not answer in time")

    # -- the worker's side ----------------------------------------------------------------
    def _find(self, path: str, ino: int | None) -> FakeNetns:
        ns = self.namespaces.get(ino) if ino is not None else None
        if ns is None or ns.gone or ns.path != path:
            raise protocol.NetnsGone(f"{path}: namespace changed or is gone")
        return ns

    def _handle(self, request: protocol.Request[Any]) -> object:
        if isinstance(request, protocol.Scan):
            live = [ns for ns in self.namespaces.values() if not ns.gone]
            return protocol.Scanned(
                tuple(
                    netns.Candidate(ns.path, ns.ino, ns.interfaces)
                    for ns in live
                    if not request.paths or ns.path in request.paths
                ),
                self.host,
            )
        if isinstance(request, protocol.Forget):
            return protocol.Count(0)
        if isinstance(request, protocol.ReadCounters):
            return protocol.Counters({})
        assert isinstance(request, protocol.InNetns), request
        ns = self._find(request.path, request.ino)
        return self._in_netns(ns, request)

    def _in_netns(self, ns: FakeNetns, request: protocol.InNetns[Any]) -> object:
        if isinstance(request, protocol.Apply | protocol.Commit):
            before = ns.generation
            self._commit(ns, request.script)
            sole = ns.generation == before + 1
            digest = ns.digest() if isinstance(request, protocol.Apply) or not sole else None
            return protocol.Committed(digest, ns.generation, 0.001)
        if isinstance(request, protocol.Patch):
            if ns.generation != request.generation:
                return protocol.Patched(False, ns.generation, False)
            if self.refuse:
                raise protocol.ApplyFailed("fake nft refused the patch")
            fingerprint = render_nft.parse_fingerprint(request.script)
            ns.commit(f"{ns.tables}# patched to {fingerprint}\n", fingerprint)
            if ns.raced:
                ns.raced = False
                ns.generation += 1
                return protocol.Patched(True, ns.generation, False, 0.001)
            return protocol.Patched(True, ns.generation, True, 0.001)
        if isinstance(request, protocol.ReadGeneration):
            return protocol.Generation(ns.generation)
        if isinstance(request, protocol.Inspect):
            return protocol.Examined(ns.fingerprint, ns.digest(), ns.generation, ns.foreign)
        if isinstance(request, protocol.Glance):
            return protocol.Examined(ns.fingerprint, None, ns.generation, ns.foreign)
        if isinstance(request, protocol.Snapshot):
            comment = render_nft.parse_comment(ns.tables)
            return protocol.Held(ns.tables or None, ns.digest(), ns.generation, comment)
        if isinstance(request, protocol.ReadComment):
            return protocol.Comment(render_nft.parse_comment(ns.tables))
        if isinstance(request, protocol.ListOwned):
            return protocol.Tables(("inet podseg",) if ns.tables else (), ())
        return self._connections(ns, request)

    def _connections(self, ns: FakeNetns, request: protocol.InNetns[Any]) -> object:
        if isinstance(request, protocol.ConntrackList):
            return protocol.ConntrackEntries(tuple(ns.connections))
        if isinstance(request, protocol.ConntrackDelete):
            keys = {e.key for e in request.entries}
            before = len(ns.connections)
            ns.connections = [e for e in ns.connections if e.key not in keys]
            return protocol.Count(before - len(ns.connections))
        if isinstance(request, protocol.ConntrackMark):
            keys = {e.key for e in request.entries}
            ns.connections = [
                dataclasses.replace(e, mark=e.mark | request.mark) if e.key in keys else e
                for e in ns.connections
            ]
            return protocol.Count(len(keys))
        raise protocol.DataplaneError(f"the fake dataplane does not do {request.op}")

    def _commit(self, ns: FakeNetns, script: str) -> None:
        if self.refuse:
            raise protocol.ApplyFailed("fake nft refused the transaction")
        if script == render_nft.delete_script():
            ns.commit("", None)
        else:
            ns.commit(script, render_nft.parse_fingerprint(script))
