"""Listeners that hold one netlink socket inside each of many pod namespaces, and the one select
loop that reads them all: the base of the drop reader (NFLOG, `agent.flows.reader`) and of the
change watcher (nftables notifications, `agent.dataplane.watcher`), which run as two parts of
one helper process (`agent.helper`).

Why one base: a netlink socket stays bound to the namespace it was created in, so the helper
enters a namespace (setns) only to create the socket and returns at once; the agent's event
loop never switches namespace (docs/architecture.md, doctrine 5). Both parts take the same
requests, keep their sockets the same way and notice vanished namespaces the same way; only
what they subscribe to and what they make of a datagram differ (`create`, `drain`).

Protocol (JSON lines, each naming its part): requests on stdin are `Open` and `Close`
(`encode`/`decode`, with `"part"`). Output on stdout, each line with the `"part"` it comes
from: whatever `drain` emits per source, `{"opened": key}`, `{"closed": key, "reason": ...}`
(closed on request, or because the namespace is gone: its path no longer names the same
inode), and `{"error": ..., "key": ...}`. A part that raises ends the whole loop
(`PartFailed`): the helper then exits, and the agent restarts it with both parts.

The helper imports only what its loop needs (no `dataclasses`, `asyncio`, `importlib.
metadata`): each costs megabytes of the helper's memory (tests/unit/test_child_imports.py).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import selectors
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from agent.dataplane import enter, errors

CHECK_PERIOD = 1.0  # seconds between checks that each namespace still exists


class Open(NamedTuple):
    """Agent -> process: open a socket in this pod's namespace, reported under `key`."""

    key: str
    path: str
    ino: int


class Close(NamedTuple):
    """Agent -> process: close the socket of `key`."""

    key: str


class PartFailed(Exception):
    """A part raised: the loop stops, so that neither part goes on alone."""

    def __init__(self, part: str, error: BaseException) -> None:
        super().__init__(f"{part}: {type(error).__name__}: {error}")
        self.part = part


def encode(message: Open | Close, part: str) -> str:
    """The request line for `part` of the helper, for its stdin."""
    op = "open" if isinstance(message, Open) else "close"
    return json.dumps({"op": op, "part": part, **message._asdict()}) + "\n"


def decode(raw: dict[str, Any]) -> Open | Close:
    """A request line's message; ValueError/KeyError/TypeError when malformed."""
    op = raw.get("op")
    if op == "open":
        return Open(str(raw["key"]), str(raw["path"]), int(raw["ino"]))
    if op == "close":
        return Close(str(raw["key"]))
    raise ValueError(f"unknown op {op!r}")


class Source(NamedTuple):
    key: str
    path: str
    ino: int
    sock: socket.socket


def emit(message: dict[str, Any]) -> None:
    """One output line."""
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class Listener:
    """One socket per key, registered on the loop's selector (`serve`); subclasses say which
    socket to create inside a namespace (`create`) and what to make of its datagrams
    (`drain`). Everything it emits is tagged with its `part` name."""

    def __init__(self, part: str, selector: selectors.BaseSelector, host: enter.Host) -> None:
        self.part = part
        self.host = host
        self.sources: dict[str, Source] = {}
        self.by_fd: dict[int, Source] = {}
        self.selector = selector

    def emit(self, message: dict[str, Any]) -> None:
        emit({**message, "part": self.part})

    def create(self, path: str, ino: int) -> socket.socket:
        """A configured, non-blocking socket bound to the namespace at `path` (OSError when
        that fails)."""
        raise NotImplementedError

    def drain(self, source: Source) -> None:
        """Read what `source`'s socket holds now and emit it."""
        raise NotImplementedError

    def netlink_in(self, path: str, ino: int, family: int) -> socket.socket:
        """A raw netlink socket of `family` created inside the namespace at `path` (checked
        against `ino`); OSError (ESTALE) when the namespace is gone or not that one."""
        try:
            with self.host.entered(path, ino):
                return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, family)
        except errors.NetnsGone as exc:
            raise OSError(errno.ESTALE, str(exc)) from exc

    def open(self, key: str, path: str, ino: int) -> None:
        old = self.sources.get(key)
        if old is not None and old.path == path and old.ino == ino:
            return
        if old is not None:
            self.close(key, "replaced")
        try:
            sock = self.create(path, ino)
        except OSError as exc:
            self.emit({"error": f"open: {exc.strerror or exc}", "key": key})
            return
        source = Source(key, path, ino, sock)
        self.sources[key] = source
        self.by_fd[sock.fileno()] = source
        self.selector.register(sock, selectors.EVENT_READ, self)
        self.emit({"opened": key})

    def close(self, key: str, reason: str) -> None:
        source = self.sources.pop(key, None)
        if source is None:
            return
        self.by_fd.pop(source.sock.fileno(), None)
        self.selector.unregister(source.sock)
        source.sock.close()
        self.emit({"closed": key, "reason": reason})

    def check(self) -> None:
        """Close the sockets of namespaces that are gone (their path names another inode)."""
        for source in list(self.sources.values()):
            try:
                same = os.stat(source.path).st_ino == source.ino
            except OSError:
                same = False
            if not same:
                self.close(source.key, "netns_gone")

    def handle(self, message: Open | Close) -> None:
        if isinstance(message, Open):
            self.open(message.key, message.path, message.ino)
        else:
            self.close(message.key, "requested")


@contextlib.contextmanager
def _failing_as(part: Listener) -> Iterator[None]:
    """Whatever `part` raises ends the loop as PartFailed naming it."""
    try:
        yield
    except Exception as exc:
        raise PartFailed(part.part, exc) from exc


def _requests(parts: dict[str, Listener], pending: bytes) -> bytes:
    """Hand every complete request line of `pending` to its part; return the incomplete rest."""
    while b"\n" in pending:
        line, pending = pending.split(b"\n", 1)
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            message = decode(raw)
            part = parts.get(raw.get("part"))
            if part is None:
                raise ValueError(f"unknown part {raw.get('part')!r}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            emit({"error": f"bad request: {exc}", "key": "", "part": ""})
            continue
        with _failing_as(part):
            part.handle(message)
    return pending


def serve(parts: dict[str, Listener], selector: selectors.BaseSelector) -> None:
    """Run the loop over stdin and the parts' sockets (all registered on `selector`) until
    stdin closes; PartFailed when a part raises."""
    stdin = sys.stdin.fileno()
    selector.register(stdin, selectors.EVENT_READ)
    next_check = time.monotonic() + CHECK_PERIOD
    pending = b""
    while True:
        timeout = max(0.0, next_check - time.monotonic())
        for key, _events in selector.select(timeout):
            if key.fd == stdin:
                chunk = os.read(stdin, 65536)
                if not chunk:
                    return  # the agent closed our stdin: stop
                pending = _requests(parts, pending + chunk)
                continue
            part: Listener = key.data
            source = part.by_fd.get(key.fd)
            if source is not None:
                with _failing_as(part):
                    part.drain(source)
        if time.monotonic() >= next_check:
            for part in parts.values():
                with _failing_as(part):
                    part.check()
            next_check = time.monotonic() + CHECK_PERIOD
