"""The worker's handles on pod namespaces: entering one, and the per-namespace libnftables
context, generation reader and element-patch netlink socket it keeps open.

Why kept open: a libnftables context (and the netlink socket under it) is bound to the
namespace it was created in, and creating one costs more than the transaction it runs, so the
worker keeps one per namespace until the agent says the pod is gone (`forget`).

Why some are closed early: a context keeps what its largest command needed (its output
buffer keeps the capacity of the largest listing, its cache the sets it loaded), and the
C heap keeps freed pages, so a worker that once programmed or listed big peer sets would hold
that memory for every namespace long after the sets shrank. A context whose command moved
more than HEAVY_BYTES (script plus output: several hundred set elements) is closed after the
request (`shed`) and the C heap trimmed; the next command opens a fresh one, a cost small
next to the big command itself. Small commands (element patches, generation reads, glances)
keep their context. And at most MAX_CONTEXTS stay open (each holds about 0.7 MiB even for a
small table): the least recently used is closed when another is needed, so a node's busy pods
keep theirs and the memory does not grow with the number of namespaces.

Why a lock: the worker works on several namespaces at once, one thread each (`pool`, `lanes`:
one namespace is only ever worked on by one thread at a time), so the maps of handles are
shared. A handle in use (its namespace entered by some thread) is never closed to make room;
closing a socket waits in the kernel, so handles are closed outside the lock.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import itertools
import socket
import threading
from collections.abc import Collection, Iterator

from agent.dataplane import enter, netlink
from agent.dataplane.nft import generation, libnft

HEAVY_BYTES = 16 * 1024
MAX_CONTEXTS = 32


def _trim() -> None:
    """Give the C heap's free pages back to the system (glibc; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


class Namespaces:
    def __init__(self, max_contexts: int = MAX_CONTEXTS) -> None:
        self.host = enter.Host()
        self.max_contexts = max(1, max_contexts)
        self.contexts: dict[enter.Ident, libnft.Context] = {}  # least recently used first
        self.evicted = False  # a context was closed to make room: trim after the request
        self.generations: dict[enter.Ident, generation.Reader] = {}
        # Closing a netfilter netlink socket waits in the kernel (~15 ms): one per namespace.
        self.sockets: dict[enter.Ident, socket.socket] = {}
        self.sequence = itertools.count(1)
        self.heavy: set[enter.Ident] = set()  # contexts to close after this request
        self.lock = threading.Lock()  # guards the maps above and `busy`
        self.busy: collections.Counter[enter.Ident] = collections.Counter()  # entered now

    def run_in(self, ident: enter.Ident, script: str) -> str:
        """Run nft commands with the context of the namespace the thread is in (`ident`),
        noting a heavy one for `shed`."""
        out = self.nft(ident).run(script)
        if len(script) + len(out) > HEAVY_BYTES:
            with self.lock:
                self.heavy.add(ident)
        return out

    def shed(self, trim: bool = False) -> int:
        """Close the contexts that ran heavy commands and trim the C heap (also with `trim`:
        the request itself was big); how many were closed. Called between requests, when no
        thread is inside any namespace (a batch returns once every part is done)."""
        with self.lock:
            evicted, self.evicted = self.evicted, False
            heavy, self.heavy = self.heavy, set()
            shut = [ctx for ident in heavy if (ctx := self.contexts.pop(ident, None)) is not None]
        for ctx in shut:
            ctx.close()
        if shut or evicted or trim:
            _trim()
        return len(shut)

    @contextlib.contextmanager
    def entered(self, path: str, ino: int | None) -> Iterator[enter.Ident]:
        with self.host.entered(path, ino) as ident:
            with self.lock:
                self.busy[ident] += 1
            try:
                yield ident
            finally:
                with self.lock:
                    self.busy[ident] -= 1
                    if not self.busy[ident]:
                        del self.busy[ident]

    def nft(self, ident: enter.Ident) -> libnft.Context:
        """The namespace's libnftables context (the thread must be inside the namespace)."""
        shut: list[libnft.Context] = []
        with self.lock:
            ctx = self.contexts.pop(ident, None)
            if ctx is None:
                # Least recently used first; one in use stays (over the bound for a moment).
                idle = [other for other in self.contexts if not self.busy[other]]
                excess = len(self.contexts) + 1 - self.max_contexts
                shut = [self.contexts.pop(oldest) for oldest in idle[: max(0, excess)]]
                self.evicted = self.evicted or bool(shut)
                # Created under the lock: libnftables initialises its globals on first use.
                ctx = libnft.Context(libnft.OUTPUT_TERSE)
            self.contexts[ident] = ctx  # now the most recently used
        for closing in shut:
            closing.close()
        return ctx

    def generation(self, ident: enter.Ident) -> int:
        """The nftables generation of the namespace the thread is in now (`ident`)."""
        with self.lock:
            reader = self.generations.get(ident)
            if reader is None:
                reader = generation.Reader()
                self.generations[ident] = reader
        return reader.get()

    def element_socket(self, ident: enter.Ident) -> socket.socket:
        """A NETLINK_NETFILTER socket of the namespace the thread is in now (`ident`)."""
        with self.lock:
            sock = self.sockets.get(ident)
            if sock is None:
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink.NETLINK_NETFILTER)
                sock.settimeout(5.0)
                sock.bind((0, 0))
                self.sockets[ident] = sock
        return sock

    def drop_socket(self, ident: enter.Ident) -> None:
        with self.lock:
            sock = self.sockets.pop(ident, None)
        if sock is not None:
            sock.close()

    def run(self, path: str, ino: int | None, script: str, flags: int = libnft.OUTPUT_TERSE) -> str:
        """Run nft commands in the namespace; their output (listings) with `flags`."""
        with self.entered(path, ino) as ident:
            if flags == libnft.OUTPUT_TERSE:
                return self.run_in(ident, script)
            ctx = self.nft(ident)
            ctx.set_output_flags(flags)
            try:
                return self.run_in(ident, script)
            finally:
                ctx.set_output_flags(libnft.OUTPUT_TERSE)

    def forget(self, inos: Collection[int] | None) -> int:
        """Close the contexts of the given namespaces (None: all), releasing the namespaces."""

        def gone(ident: enter.Ident) -> bool:
            return inos is None or ident[1] in inos

        with self.lock:
            contexts = [self.contexts.pop(i) for i in list(self.contexts) if gone(i)]
            self.heavy = {i for i in self.heavy if not gone(i)}
            readers = [self.generations.pop(i) for i in list(self.generations) if gone(i)]
            sockets = [self.sockets.pop(i) for i in list(self.sockets) if gone(i)]
        for ctx in contexts:
            ctx.close()
        for reader in readers:
            reader.close()
        for sock in sockets:
            sock.close()
        return len(contexts)
