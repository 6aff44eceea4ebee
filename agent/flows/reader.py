"""The drop reader: a process that holds one NFLOG netlink socket inside each pod namespace.

Kernel LOG output from a pod namespace is discarded, so denied packets are logged to an NFLOG
group of that namespace, and only a netlink socket created *inside* the namespace receives
them. A socket stays bound to the namespace it was created in, so this process enters the
namespace (setns) only to create the socket, and returns at once; the agent's event loop never
switches namespace (docs/architecture.md). It does nothing else, like the dataplane worker.

Protocol (JSON lines): requests on stdin are `Open` and `Close` (`encode`/`decode`). Output
on stdout: `{"key", "packets": [[prefix, src, dst, proto, sport, dport], ...], "stats": {...}}`
per received datagram, `{"opened": key}`, `{"closed": key, "reason": ...}` (closed on request,
or because the namespace is gone: its path no longer names the same inode), and
`{"error": ..., "key": ...}`. It dies with the agent.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import selectors
import socket
import sys
import time
from typing import Any

from agent import child
from agent.dataplane import enter, protocol
from agent.dataplane.nft import render as render_nft
from agent.flows import nflog

CHECK_PERIOD = 1.0  # seconds between checks that each namespace still exists
FLUSH_HUNDREDTHS = 10  # the kernel hands over a partly filled batch after 100 ms
RCVBUF = 1 << 20
RECV_SIZE = 1 << 18
MSG_TRUNC = getattr(socket, "MSG_TRUNC", 0x20)


@dataclasses.dataclass(frozen=True)
class Open:
    """Agent -> reader: read the NFLOG group of this pod's namespace under `key`."""

    key: str
    path: str
    ino: int


@dataclasses.dataclass(frozen=True)
class Close:
    """Agent -> reader: stop reading `key`."""

    key: str


def encode(message: Open | Close) -> str:
    """The request line for the reader's stdin."""
    op = "open" if isinstance(message, Open) else "close"
    return json.dumps({"op": op, **dataclasses.asdict(message)}) + "\n"


def decode(raw: dict[str, Any]) -> Open | Close:
    """A request line's message; ValueError/KeyError/TypeError when malformed."""
    op = raw.get("op")
    if op == "open":
        return Open(str(raw["key"]), str(raw["path"]), int(raw["ino"]))
    if op == "close":
        return Close(str(raw["key"]))
    raise ValueError(f"unknown op {op!r}")


@dataclasses.dataclass
class Source:
    key: str
    path: str
    ino: int
    sock: socket.socket


class Reader:
    def __init__(self, group: int = render_nft.NFLOG_GROUP) -> None:
        self.group = group
        self.host = enter.Host()
        self.sources: dict[str, Source] = {}
        self.by_fd: dict[int, Source] = {}
        self.selector = selectors.DefaultSelector()
        self.seq = 0

    def emit(self, message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    def _socket_in(self, path: str, ino: int) -> socket.socket:
        try:
            with self.host.entered(path, ino):
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nflog.NETLINK_NETFILTER)
        except protocol.NetnsGone as exc:
            raise OSError(errno.ESTALE, str(exc)) from exc
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            sock.bind((0, 0))
            sock.settimeout(2.0)
            for message in (
                nflog.bind_message(self.group, self._next_seq()),
                nflog.timeout_message(self.group, FLUSH_HUNDREDTHS, self._next_seq()),
            ):
                sock.send(message)
                code = nflog.ack_error(sock.recv(4096))
                if code in (errno.EPERM, errno.EBUSY):
                    raise OSError(
                        code, f"NFLOG group {self.group} is held by another socket (group busy)"
                    )
                if code:
                    raise OSError(code, f"nflog config: {os.strerror(code)}")
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def open(self, key: str, path: str, ino: int) -> None:
        old = self.sources.get(key)
        if old is not None and old.path == path and old.ino == ino:
            return
        if old is not None:
            self.close(key, "replaced")
        try:
            sock = self._socket_in(path, ino)
        except OSError as exc:
            self.emit({"error": f"open: {exc.strerror or exc}", "key": key})
            return
        source = Source(key, path, ino, sock)
        self.sources[key] = source
        self.by_fd[sock.fileno()] = source
        self.selector.register(sock, selectors.EVENT_READ)
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

    def drain(self, source: Source) -> None:
        for _ in range(64):  # bounded per wake-up, so one busy namespace cannot starve others
            try:
                data, _anc, flags, _addr = source.sock.recvmsg(RECV_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the kernel dropped messages: count, go on
                    self.emit({"key": source.key, "packets": [], "stats": {"overrun": 1}})
                    continue
                self.emit({"error": f"recv: {exc.strerror or exc}", "key": source.key})
                self.close(source.key, "error")
                return
            packets, stats = nflog.parse(data)
            if flags & MSG_TRUNC:
                stats.truncated += 1
            self.emit(
                {
                    "key": source.key,
                    "packets": [
                        [p.prefix, p.src, p.dst, p.protocol, p.sport, p.dport] for p in packets
                    ],
                    "stats": dataclasses.asdict(stats),
                }
            )

    def handle(self, message: Open | Close) -> None:
        if isinstance(message, Open):
            self.open(message.key, message.path, message.ino)
        else:
            self.close(message.key, "requested")

    def run(self) -> None:
        stdin = sys.stdin.fileno()
        self.selector.register(stdin, selectors.EVENT_READ)
        next_check = time.monotonic() + CHECK_PERIOD
        pending = b""
        while True:
            timeout = max(0.0, next_check - time.monotonic())
            for key, _events in self.selector.select(timeout):
                if key.fd == stdin:
                    chunk = os.read(stdin, 65536)
                    if not chunk:
                        return  # the agent closed our stdin: stop
                    pending += chunk
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        if line.strip():
                            try:
                                self.handle(decode(json.loads(line)))
                            except (ValueError, KeyError, TypeError) as exc:
                                self.emit({"error": f"bad request: {exc}", "key": ""})
                else:
                    source = self.by_fd.get(key.fd)
                    if source is not None:
                        self.drain(source)
            if time.monotonic() >= next_check:
                self.check()
                next_check = time.monotonic() + CHECK_PERIOD


def main() -> None:
    child.die_with_parent(child.READER_PARENT_ENV)
    Reader().run()


if __name__ == "__main__":
    main()
