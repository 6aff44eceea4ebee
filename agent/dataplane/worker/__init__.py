"""The dataplane worker: the only process of podseg that ever enters a pod's network namespace
to change it.

The agent's event loop never switches namespace (docs/architecture.md): it sends typed
requests (`agent.dataplane.protocol`) to this process as lines on stdin and reads one line per
answer on stdout. The worker keeps one libnftables context per namespace (the
netlink socket is bound to the namespace it was opened in), so an apply costs a few
milliseconds instead of a process start. A hung worker is killed by the agent and started
afresh; nothing here is state the agent cannot rebuild.

What each op does is documented on its request type in `protocol`; the operations live in
`scan` (finding namespaces), `nft` (the nftables backend), `ipt` (the iptables backend) and
`connections` (conntrack), all entering namespaces through `namespaces.Namespaces`.

The parts of a batch run on a few threads (`pool`; PODSEG_DATAPLANE_THREADS, default 2), each
namespace's parts in the order sent (`lanes`, keyed by the namespace at the part's path), so
the kernel work of a pass uses both cores of a node; the answer lists every part's reply in
the order of the parts, as with one thread.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from collections.abc import Callable, Hashable
from typing import Any

from agent import child
from agent.dataplane import protocol
from agent.dataplane.ipt import commands as ipt_commands
from agent.dataplane.nft import libnft
from agent.dataplane.worker import connections, ipt, namespaces, nft, pool, scan

Handler = Callable[[namespaces.Namespaces, Any], Any]
THREADS = 2
QUICK_ELEMENTS = 64  # an element patch of at most this many elements is `quick`


def _counters(ns: namespaces.Namespaces, request: protocol.ReadCounters) -> protocol.Counters:
    read = ipt.counters if request.backend == "iptables" else nft.counters
    values = {t.key: read(ns, t) for t in request.targets}
    return protocol.Counters({k: v for k, v in values.items() if v is not None})


def _owned(ns: namespaces.Namespaces, request: protocol.ListOwned) -> protocol.Tables:
    return protocol.Tables(
        nft.owned_tables(ns, request.path, request.ino), ipt.owned(ns, request.path, request.ino)
    )


def _forget(ns: namespaces.Namespaces, request: protocol.Forget) -> protocol.Count:
    return protocol.Count(ns.forget(request.inos))


def _ping(ns: namespaces.Namespaces, request: protocol.Ping) -> protocol.Pong:
    return protocol.Pong(os.getpid(), len(ns.contexts))


HANDLERS: dict[protocol.Op, Handler] = {
    protocol.Op.SCAN: lambda ns, request: scan.scan(ns.host, request),
    protocol.Op.APPLY: nft.apply,
    protocol.Op.COMMIT: nft.commit,
    protocol.Op.PATCH: nft.patch,
    protocol.Op.GENERATION: nft.read_generation,
    protocol.Op.INSPECT: nft.inspect,
    protocol.Op.GLANCE: nft.glance,
    protocol.Op.SNAPSHOT: nft.snapshot,
    protocol.Op.COMMENT: nft.comment,
    protocol.Op.TABLES: _owned,
    protocol.Op.FORGET: _forget,
    protocol.Op.COUNTERS: _counters,
    protocol.Op.CONNTRACK_LIST: connections.list_entries,
    protocol.Op.CONNTRACK_DELETE: connections.delete,
    protocol.Op.CONNTRACK_MARK: connections.mark,
    protocol.Op.IPT_APPLY: ipt.apply,
    protocol.Op.IPT_INSPECT: ipt.inspect,
    protocol.Op.IPT_COMMENT: ipt.comment,
    protocol.Op.IPT_DELETE: ipt.delete,
    protocol.Op.IPT_PATCH: ipt.patch,
    protocol.Op.PING: _ping,
}


class Worker:
    """Holds the namespace handles and answers requests."""

    def __init__(self, threads: int = THREADS) -> None:
        self.namespaces = namespaces.Namespaces()
        self.pool = pool.Pool(threads)

    def answer(self, line: bytes) -> bytes:
        """The reply line to one request line (never raises): its reply or its typed error; a
        batch's parts each answered on their own, in order, on the pool's threads."""
        try:
            ident, request = protocol.read_request(line)
        except protocol.Unreadable as exc:
            return protocol.reply_line(exc.ident, exc)
        if isinstance(request, list):
            return protocol.reply_line(ident, protocol.BatchReplies(self._parts(request)))
        return protocol.reply_line(ident, self.outcome(request))

    def outcome(self, request: protocol.Request[Any] | protocol.DataplaneError) -> Any:
        """The reply to one request, or the typed error it met (never raises); a reply with a
        `seconds` field carries the request's own time here."""
        if isinstance(request, protocol.DataplaneError):
            return request  # a part that did not read
        started = time.perf_counter()
        try:
            reply = self.handle(request)
        except protocol.DataplaneError as exc:
            return exc
        except (libnft.NftError, ipt_commands.IptError) as exc:
            return protocol.ApplyFailed(str(exc))
        except Exception as exc:  # reported to the agent as a typed error, never a crash
            return protocol.DataplaneError(f"{type(exc).__name__}: {exc}")
        if isinstance(reply, protocol.Committed | protocol.Patched):
            reply = dataclasses.replace(reply, seconds=time.perf_counter() - started)
        return reply

    def _parts(self, parts: protocol.Parts) -> tuple[Any, ...]:
        if all(map(quick, parts)):
            return tuple(self.outcome(part) for part in parts)  # in order, on this thread
        return tuple(
            self.pool.run([(lane(part), functools.partial(self.outcome, part)) for part in parts])
        )

    def handle(self, request: protocol.Request[Any]) -> Any:
        if isinstance(request, protocol.Batch):  # a batch inside a batch: one part after another
            return protocol.BatchReplies(tuple(self.outcome(part) for part in request.requests))
        handler = HANDLERS.get(request.op)
        if handler is None:
            raise ValueError(f"op {request.op} is not handled here")
        return handler(self.namespaces, request)


def quick(part: protocol.Request[Any] | protocol.DataplaneError) -> bool:
    """Whether a part is quicker done than handed to another thread: an element patch of a
    few elements over netlink (no libnftables, no child process), a generation read, a ping.
    A batch of such parts alone runs on the reading thread, one part after another: handing
    each to the pool costs thread wake-ups, and a thread back from a system call waits for
    the interpreter's lock while another runs Python (up to its switch interval, 5 ms),
    which is more than the parts' own work (about 0.2 ms each).

    Also the read-backs through libnftables (`Glance` at first contact, `Inspect` at resync):
    run from two threads of one process at once, libnftables' listings took 150-500 ms each
    in namespaces whose tables had been replaced by a whole script (2 ms from one thread, and
    from two `nft` processes at once; docs/benchmarks, restart to ready)."""
    if isinstance(part, protocol.Patch):
        return bool(part.state) and _elements(part) <= QUICK_ELEMENTS
    return isinstance(
        part,
        protocol.ReadGeneration
        | protocol.Ping
        | protocol.Glance
        | protocol.Inspect
        | protocol.DataplaneError,
    )


def _elements(patch: protocol.Patch) -> int:
    return sum(len(change.deleted) + len(change.added) for change in patch.elements)


def lane(request: protocol.Request[Any] | protocol.DataplaneError) -> Hashable | None:
    """The lane of a batch part: the identity of the namespace at its path (as the part
    will find it when it enters: two paths of one namespace share a lane), or the path itself
    when nothing is there (the part fails alone); None (a barrier) for a part about no single
    namespace."""
    if not isinstance(request, protocol.InNetns):
        return None
    try:
        st = os.stat(request.path)
    except OSError:
        return ("missing", request.path)
    return (st.st_dev, st.st_ino)


def threads() -> int:
    """How many parts of a batch may run at once (PODSEG_DATAPLANE_THREADS; at least 1)."""
    try:
        return max(1, int(os.environ.get(protocol.THREADS_ENV, THREADS)))
    except ValueError:
        return THREADS


def main() -> None:
    child.die_with_parent(child.WORKER_PARENT_ENV)
    worker = Worker(threads())
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        out.write(worker.answer(line))
        out.flush()
        # After the answer (the agent does not wait for it): memory of big requests goes back.
        worker.namespaces.shed(trim=len(line) > namespaces.HEAVY_BYTES)
