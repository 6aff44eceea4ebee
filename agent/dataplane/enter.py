"""Entering a network namespace for a moment: open and verify the namespace file, switch the
calling thread into it, and always switch back.

Why one module: the dataplane worker and the drop reader are the only processes of podseg
that enter pod namespaces (the agent's event loop never does, docs/architecture.md); both
must refuse the host namespace and a namespace replaced under the same path (inode check),
and both must be back in the host namespace whatever happens inside. Sockets opened inside
stay bound to that namespace after the thread leaves it.

`NetnsGone` comes from `agent.dataplane.errors`, not the worker protocol: the drop reader and
the change watcher import this module, and the protocol's dataclasses would cost each of them
about 2 MiB (tests/unit/test_child_imports.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

from agent.dataplane import errors

CLONE_NEWNET = 0x40000000

Ident = tuple[int, int]  # (st_dev, st_ino) of a namespace file: who it is

_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at `fd`."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class Host:
    """The namespace the process started in (the host's, for the DaemonSet), held open so the
    thread can always come back to it, and never entered as a pod's."""

    def __init__(self) -> None:
        self.fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        st = os.fstat(self.fd)
        self.ident: Ident = (st.st_dev, st.st_ino)

    def open(self, path: str, ino: int | None) -> tuple[int, Ident]:
        """An open fd of the namespace at `path` and its identity; NetnsGone when it is not
        there, is not the inode `ino` the caller meant, or is the host namespace."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise errors.NetnsGone(f"{path}: {exc.strerror}") from exc
        st = os.fstat(fd)
        ident = (st.st_dev, st.st_ino)
        if (ino is not None and st.st_ino != ino) or ident == self.ident:
            os.close(fd)
            raise errors.NetnsGone(f"{path}: namespace changed or is the host namespace")
        return fd, ident

    @contextlib.contextmanager
    def inside(self, fd: int) -> Iterator[None]:
        """Inside the namespace open at `fd` for the body of the `with`; back home after it."""
        setns(fd)
        try:
            yield
        finally:
            setns(self.fd)

    @contextlib.contextmanager
    def entered(self, path: str, ino: int | None) -> Iterator[Ident]:
        """Inside the namespace at `path` (checked as `open` does) for the body of the
        `with`; back home after it."""
        fd, ident = self.open(path, ino)
        try:
            with self.inside(fd):
                yield ident
        finally:
            os.close(fd)

    def close(self) -> None:
        os.close(self.fd)
