"""The worker's handles on pod namespaces: entering one, and the per-namespace libnftables
context and generation reader it keeps open.

Why kept open: a libnftables context (and the netlink socket under it) is bound to the
namespace it was created in, and creating one costs more than the transaction it runs, so the
worker keeps one per namespace until the agent says the pod is gone (`forget`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator

from agent.dataplane import enter
from agent.dataplane.nft import generation, libnft


class Namespaces:
    def __init__(self) -> None:
        self.host = enter.Host()
        self.contexts: dict[enter.Ident, libnft.Context] = {}
        self.generations: dict[enter.Ident, generation.Reader] = {}

    @contextlib.contextmanager
    def entered(self, path: str, ino: int | None) -> Iterator[enter.Ident]:
        with self.host.entered(path, ino) as ident:
            yield ident

    def nft(self, ident: enter.Ident) -> libnft.Context:
        """The namespace's libnftables context (the thread must be inside the namespace)."""
        ctx = self.contexts.get(ident)
        if ctx is None:
            ctx = libnft.Context(libnft.OUTPUT_TERSE)
            self.contexts[ident] = ctx
        return ctx

    def generation(self, ident: enter.Ident) -> int:
        """The nftables generation of the namespace the thread is in now (`ident`)."""
        reader = self.generations.get(ident)
        if reader is None:
            reader = generation.Reader()
            self.generations[ident] = reader
        return reader.get()

    def run(self, path: str, ino: int | None, script: str, flags: int = libnft.OUTPUT_TERSE) -> str:
        """Run nft commands in the namespace; their output (listings) with `flags`."""
        with self.entered(path, ino) as ident:
            ctx = self.nft(ident)
            if flags == libnft.OUTPUT_TERSE:
                return ctx.run(script)
            ctx.set_output_flags(flags)
            try:
                return ctx.run(script)
            finally:
                ctx.set_output_flags(libnft.OUTPUT_TERSE)

    def forget(self, inos: Collection[int] | None) -> int:
        """Close the contexts of the given namespaces (None: all), releasing the namespaces."""
        dropped = 0
        for ident, ctx in list(self.contexts.items()):
            if inos is None or ident[1] in inos:
                ctx.close()
                del self.contexts[ident]
                dropped += 1
        for ident, reader in list(self.generations.items()):
            if inos is None or ident[1] in inos:
                reader.close()
                del self.generations[ident]
        return dropped
