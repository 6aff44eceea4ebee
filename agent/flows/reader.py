"""The drop reader: the part of the helper process (`agent.helper`) that holds one NFLOG netlink
socket inside each pod namespace.

Kernel LOG output from a pod namespace is discarded, so denied packets are logged to an NFLOG
group of that namespace, and only a netlink socket created *inside* the namespace receives
them. A socket stays bound to the namespace it was created in, so this process enters the
namespace (setns) only to create the socket, and returns at once; the agent's event loop never
switches namespace (docs/architecture.md). It shares its process and select loop with the change
watcher (`agent.dataplane.watcher`), and does nothing else.

Protocol: that of `agent.dataplane.listener` (requests `Open` and `Close`), plus per received
datagram `{"key", "packets": [[prefix, src, dst, proto, sport, dport], ...], "stats": {...}}`.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket

from agent.dataplane import enter, listener
from agent.flows import nflog

FLUSH_HUNDREDTHS = 10  # the kernel hands over a partly filled batch after 100 ms
RCVBUF = 1 << 20
RECV_SIZE = 1 << 18
MSG_TRUNC = getattr(socket, "MSG_TRUNC", 0x20)


class Reader(listener.Listener):
    def __init__(
        self,
        part: str,
        selector: selectors.BaseSelector,
        host: enter.Host,
        group: int,
    ) -> None:
        super().__init__(part, selector, host)
        self.group = group
        self.seq = 0

    def create(self, path: str, ino: int) -> socket.socket:
        sock = self.netlink_in(path, ino, nflog.NETLINK_NETFILTER)
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

    def drain(self, source: listener.Source) -> None:
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
                    "stats": stats.as_dict(),
                }
            )
