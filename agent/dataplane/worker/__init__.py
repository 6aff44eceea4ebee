"""The dataplane worker: the only process of podseg that ever enters a pod's network namespace
to change it.

The agent's event loop never switches namespace (docs/architecture.md): it sends typed
requests (`agent.dataplane.protocol`) to this process as JSON lines on stdin and reads one
JSON line per answer on stdout. The worker keeps one libnftables context per namespace (the
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

import functools
import json
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

    def answer(self, raw: dict[str, Any], parallel: bool = True) -> dict[str, Any]:
        """The reply line to one request line: its result with `ok`, or a typed error
        (never raises). A batch answers each part on its own, in order (its parts run on
        the pool's threads; a batch inside a batch runs its parts one after another)."""
        reply: dict[str, Any] = {"id": raw.get("id")}
        started = time.perf_counter()
        try:
            if raw.get("op") == protocol.Op.BATCH:
                parts = raw.get("requests")
                if not isinstance(parts, list):
                    raise ValueError("batch without requests")
                reply["replies"] = self._parts(parts, parallel)
            else:
                reply.update(protocol.encode(self.handle(protocol.decode_request(raw))))
            reply["ok"] = True
        except protocol.DataplaneError as exc:
            reply.update(ok=False, kind=exc.kind, error=str(exc))
        except (libnft.NftError, ipt_commands.IptError) as exc:
            reply.update(ok=False, kind=protocol.ApplyFailed.kind, error=str(exc))
        except Exception as exc:  # reported to the agent as a typed error, never a crash
            reply.update(ok=False, kind="internal", error=f"{type(exc).__name__}: {exc}")
        reply["seconds"] = time.perf_counter() - started  # this request's own time here
        return reply

    def _parts(self, parts: list[Any], parallel: bool) -> list[dict[str, Any]]:
        if not parallel:
            return [self.answer(part, parallel=False) for part in parts]
        return self.pool.run(
            [(lane(part), functools.partial(self.answer, part, False)) for part in parts]
        )

    def handle(self, request: protocol.Request[Any]) -> Any:
        handler = HANDLERS.get(request.op)
        if handler is None:
            raise ValueError(f"op {request.op} is not handled here")
        return handler(self.namespaces, request)


def lane(raw: Any) -> Hashable | None:
    """The lane of a batch part: the identity of the namespace at its path (as the part
    will find it when it enters: two paths of one namespace share a lane), or the path itself
    when nothing is there (the part fails alone); None (a barrier) for a part about no single
    namespace."""
    op = raw.get("op") if isinstance(raw, dict) else None
    try:
        kind = protocol.REQUESTS[protocol.Op(str(op))]
    except ValueError:
        return None
    path = raw.get("path")
    if not issubclass(kind, protocol.InNetns) or not isinstance(path, str):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return ("missing", path)
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
    for line in sys.stdin:
        if not line.strip():
            continue
        sys.stdout.write(json.dumps(worker.answer(json.loads(line))) + "\n")
        sys.stdout.flush()
        # After the answer (the agent does not wait for it): memory of big requests goes back.
        worker.namespaces.shed(trim=len(line) > namespaces.HEAVY_BYTES)
