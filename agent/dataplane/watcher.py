"""The change watcher: the part of the helper process (`agent.helper`) that holds one nftables
notification socket inside each pod namespace podseg enforces, and reports every commit made
there.

Why: a pod with NET_ADMIN in its own namespace can delete or edit podseg's tables, or hook a
chain that undoes podseg's egress decision. Polling every namespace at resync leaves such a
pod open for up to a resync period; a notification socket tells the agent within milliseconds,
and the agent reads the namespace back at once (`agent.sync.tamper`). Each socket is
subscribed to NFNLGRP_NFTABLES of its namespace with a filter that keeps only the NEWGEN
message of each commit (`agent.dataplane.nft.notify`).

Like the drop reader, on the same select loop, it enters a namespace only to create the socket
(`agent.dataplane.listener`), reads and parses, nothing else. Output besides the listener's: per
wake-up of a socket, `{"key", "commits": [[generation, pid, process], ...], "lost": bool}`;
`lost` says the kernel dropped notifications (receive buffer overrun) or sent one that does not
parse, so some commit may be missing from the list.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
from typing import Any

from agent.dataplane import listener, netlink
from agent.dataplane.nft import notify

RCVBUF = 1 << 18
READS_PER_WAKEUP = 64  # bounded, so one namespace committing in a loop cannot starve others


def subscribe(sock: socket.socket) -> None:
    """Filter first (no unfiltered message may queue up), then join the group."""
    code = notify.filter_program()
    program = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HL", len(code) // 8, ctypes.addressof(program))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, notify.SO_ATTACH_FILTER, fprog)
    sock.setsockopt(notify.SOL_NETLINK, notify.NETLINK_ADD_MEMBERSHIP, notify.NFNLGRP_NFTABLES)


class Watcher(listener.Listener):
    def create(self, path: str, ino: int) -> socket.socket:
        sock = self.netlink_in(path, ino, netlink.NETLINK_NETFILTER)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            sock.bind((0, 0))
            subscribe(sock)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def drain(self, source: listener.Source) -> None:
        commits: list[list[Any]] = []
        lost = False
        for _ in range(READS_PER_WAKEUP):
            try:
                data = source.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the kernel dropped notifications: say so
                    lost = True
                    continue
                self.emit({"error": f"recv: {exc.strerror or exc}", "key": source.key})
                self.close(source.key, "error")
                return
            try:
                commits += [list(c) for c in notify.commits(data)]
            except netlink.MalformedError:
                lost = True
        if commits or lost:
            self.emit({"key": source.key, "commits": commits, "lost": lost})
