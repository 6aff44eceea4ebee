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
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import socket
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

    def run_in(self, ident: enter.Ident, script: str) -> str:
        """Run nft commands with the context of the namespace the thread is in (`ident`),
        noting a heavy one for `shed`."""
        out = self.nft(ident).run(script)
        if len(script) + len(out) > HEAVY_BYTES:
            self.heavy.add(ident)
        return out

    def shed(self, trim: bool = False) -> int:
        """Close the contexts that ran heavy commands and trim the C heap (also with `trim`:
        the request itself was big); how many were closed."""
        evicted, self.evicted = self.evicted, False
        closed = 0
        for ident in self.heavy:
            ctx = self.contexts.pop(ident, None)
            if ctx is not None:
                ctx.close()
                closed += 1
        self.heavy.clear()
        if closed or evicted or trim:
            _trim()
        return closed

    @contextlib.contextmanager
    def entered(self, path: str, ino: int | None) -> Iterator[enter.Ident]:
        with self.host.entered(path, ino) as ident:
            yield ident

    def nft(self, ident: enter.Ident) -> libnft.Context:
        """The namespace's libnftables context (the thread must be inside the namespace)."""
        ctx = self.contexts.pop(ident, None)
        if ctx is None:
            while len(self.contexts) >= self.max_contexts:
                oldest = next(iter(self.contexts))
                self.contexts.pop(oldest).close()
                self.evicted = True
            ctx = libnft.Context(libnft.OUTPUT_TERSE)
        self.contexts[ident] = ctx  # now the most recently used
        return ctx

    def generation(self, ident: enter.Ident) -> int:
        """The nftables generation of the namespace the thread is in now (`ident`)."""
        reader = self.generations.get(ident)
        if reader is None:
            reader = generation.Reader()
            self.generations[ident] = reader
        return reader.get()

    def element_socket(self, ident: enter.Ident) -> socket.socket:
        """A NETLINK_NETFILTER socket of the namespace the thread is in now (`ident`)."""
        sock = self.sockets.get(ident)
        if sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink.NETLINK_NETFILTER)
            sock.settimeout(5.0)
            sock.bind((0, 0))
            self.sockets[ident] = sock
        return sock

    def drop_socket(self, ident: enter.Ident) -> None:
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
        dropped = 0
        for ident, ctx in list(self.contexts.items()):
            if inos is None or ident[1] in inos:
                ctx.close()
                del self.contexts[ident]
                self.heavy.discard(ident)
                dropped += 1
        for ident, reader in list(self.generations.items()):
            if inos is None or ident[1] in inos:
                reader.close()
                del self.generations[ident]
        for ident, sock in list(self.sockets.items()):
            if inos is None or ident[1] in inos:
                sock.close()
                del self.sockets[ident]
        return dropped
