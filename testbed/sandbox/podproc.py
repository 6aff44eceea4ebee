"""The process that plays a pod: tiny servers plus a prober, run inside the pod's namespace.

Started as `ip netns exec NETNS python -m testbed.sandbox.podproc --name NS/POD [--ports 80,81]`.
It serves TCP and UDP on every port on both IPv4 and IPv6 (TCP: accept, write one line naming
the pod, close; UDP: reply one line naming the pod to every datagram), and it is also the client
end of probes: connections must start inside the source pod's namespace to meet that pod's
egress rules, and a process living there answers a whole batch in one timeout.

Protocol on stdin/stdout, one JSON object per line:

- at start, once every server listens: `{"id": "ready", "ready": true, "pod": ..., "pid": ...,
  "ports": [...]}`; `{"id": X, "ping": true}` is answered the same way with id X;
- `{"id": X, "probes": [{"dst": IP, "port": 80, "proto": "tcp"|"udp", "timeout": 1.0}, ...]}`
  runs all probes concurrently and answers `{"id": X, "results": [{...probe, "verdict": V,
  "elapsed": seconds}, ...]}` in the same order. Batches may overlap.
- `{"id": X, "hold": {"dst": IP, "port": P, "interval": 0.02, "timeout": 0.5}}` opens a TCP
  connection to an echo port (`--echo-ports`) and keeps exchanging one line per `interval`.
  It answers `{"id": "X.open", "verdict": V, "at": t}` once connected (or failed), and
  `{"id": X, "broken": why, "last_ok": t, "exchanges": n}` when an echo does not come back
  within `timeout` (why: `timeout`, `closed`, `error:<text>`) or after `{"release": X}`
  (why: `released`). Times are `time.monotonic()` (one clock machine-wide, all namespaces).
- verdicts: `ok` (TCP connected, UDP reply received); `timeout` (no answer: silently dropped);
  `refused` (TCP RST, ICMP unreachable or admin-prohibited, also as EACCES for ICMPv6);
  `eperm` (the local send itself failed with EPERM/EACCES: dropped by the pod's own output
  hook where the application can see it); `error:<text>` for anything else.

The process exits on stdin EOF, SIGTERM or SIGINT, so it never outlives the sandbox's pipes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import resource
import signal
import socket
import sys
import time
from typing import Any, cast

DEFAULT_PORTS = (80, 81)
MAX_TIMEOUT = 60.0
_BACKLOG = 4096
_UDP_RCVBUF = 8 * 1024 * 1024
_SO_RCVBUFFORCE = 33  # Linux; not exported by the socket module
_UDP_ATTEMPTS = 3  # datagrams sent per UDP probe, spread over its timeout
_REFUSED_ERRNOS = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNRESET}
_LOCAL_DROP_ERRNOS = {errno.EPERM, errno.EACCES}


class _UdpReply(asyncio.DatagramProtocol):
    """Answers every datagram with the pod's name."""

    def __init__(self, reply: bytes) -> None:
        self._reply = reply
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(self._reply, addr)

    def error_received(self, exc: Exception) -> None:
        """A failed reply (e.g. dropped by an output hook) is the prober's business, not ours."""


def _bound_socket(
    family: socket.AddressFamily, kind: socket.SocketKind, port: int
) -> socket.socket:
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    if kind == socket.SOCK_STREAM:
        sock.listen(_BACKLOG)
    else:  # room for a whole matrix's datagrams while the loop is busy (root may exceed rmem_max)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _UDP_RCVBUF)
    sock.setblocking(False)
    return sock


async def _start_servers(name: str, ports: tuple[int, ...]) -> list[asyncio.AbstractServer]:
    loop = asyncio.get_running_loop()
    banner = f"{name}\n".encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            writer.write(banner)
            await writer.drain()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    servers: list[asyncio.AbstractServer] = []
    for port in ports:
        for family in (socket.AF_INET, socket.AF_INET6):
            tcp = _bound_socket(family, socket.SOCK_STREAM, port)
            servers.append(await asyncio.start_server(handle, sock=tcp))
            udp = _bound_socket(family, socket.SOCK_DGRAM, port)
            await loop.create_datagram_endpoint(lambda: _UdpReply(banner), sock=udp)
    return servers


async def _start_echo_servers(ports: tuple[int, ...]) -> list[asyncio.AbstractServer]:
    """TCP servers that send every line back: the far end of a held connection."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        writer.close()

    servers: list[asyncio.AbstractServer] = []
    for port in ports:
        for family in (socket.AF_INET, socket.AF_INET6):
            sock = _bound_socket(family, socket.SOCK_STREAM, port)
            servers.append(await asyncio.start_server(echo, sock=sock))
    return servers


MAX_HOLD_SECONDS = 600.0
_releases: dict[str, asyncio.Event] = {}


async def _hold(request_id: str, spec: dict[str, Any]) -> None:
    """Hold a connection to an echo server until an echo is lost or it is released."""
    dst, port = str(spec["dst"]), int(spec["port"])
    interval = max(float(spec.get("interval", 0.02)), 0.001)
    timeout = min(float(spec.get("timeout", 0.5)), MAX_TIMEOUT)
    released = _releases.setdefault(request_id, asyncio.Event())
    started = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(dst, port), timeout)
    except TimeoutError:
        _emit({"id": f"{request_id}.open", "verdict": "timeout", "at": time.monotonic()})
        _emit({"id": request_id, "broken": "not-connected", "last_ok": None, "exchanges": 0})
        return
    except OSError as exc:
        _emit({"id": f"{request_id}.open", "verdict": _error_verdict(exc), "at": time.monotonic()})
        _emit({"id": request_id, "broken": "not-connected", "last_ok": None, "exchanges": 0})
        return
    _emit({"id": f"{request_id}.open", "verdict": "ok", "at": time.monotonic()})
    exchanges, last_ok, why = 0, time.monotonic(), "released"
    try:
        while time.monotonic() - started < MAX_HOLD_SECONDS:
            if released.is_set():
                break
            writer.write(f"{exchanges}\n".encode())
            try:
                line = await asyncio.wait_for(reader.readline(), timeout)
            except TimeoutError:
                why = "timeout"
                break
            except OSError as exc:
                why = _error_verdict(exc)
                break
            if not line:
                why = "closed"
                break
            exchanges, last_ok = exchanges + 1, time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(released.wait(), interval)
        else:
            why = "max-seconds"
    finally:
        writer.close()
        _releases.pop(request_id, None)
    _emit({"id": request_id, "broken": why, "last_ok": last_ok, "exchanges": exchanges})


def _family(dst: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in dst else socket.AF_INET


def _error_verdict(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return f"error:{name}"


async def _probe_tcp(dst: str, port: int, timeout: float) -> str:
    loop = asyncio.get_running_loop()
    sock = socket.socket(_family(dst), socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (dst, port)), timeout)
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        if exc.errno == errno.EPERM:
            return "eperm"
        if exc.errno in _REFUSED_ERRNOS or exc.errno == errno.EACCES:  # EACCES: ICMPv6 adm-prohib
            return "refused"
        return _error_verdict(exc)
    finally:
        sock.close()
    return "ok"


async def _probe_udp(dst: str, port: int, timeout: float) -> str:
    loop = asyncio.get_running_loop()
    sock = socket.socket(_family(dst), socket.SOCK_DGRAM)
    sock.setblocking(False)
    deadline = loop.time() + timeout
    try:
        sock.connect((dst, port))
        for attempt in range(_UDP_ATTEMPTS):
            try:
                sock.send(b"probe\n")
            except OSError as exc:
                if exc.errno in _LOCAL_DROP_ERRNOS:
                    return "eperm"
                if exc.errno in _REFUSED_ERRNOS:  # an ICMP error reported on this send
                    return "refused"
                return _error_verdict(exc)
            wait = (deadline - loop.time()) / (_UDP_ATTEMPTS - attempt)
            try:
                await asyncio.wait_for(loop.sock_recv(sock, 2048), max(wait, 0.0))
            except TimeoutError:
                continue
            return "ok"
        return "timeout"
    except OSError as exc:
        if exc.errno in _REFUSED_ERRNOS or exc.errno == errno.EACCES:  # ICMP(v6) errors on recv
            return "refused"
        return _error_verdict(exc)
    finally:
        sock.close()


async def _probe(spec: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    try:
        dst = str(spec["dst"])
        port = int(spec["port"])
        proto = str(spec.get("proto", "tcp")).lower()
        timeout = min(float(spec.get("timeout", 1.0)), MAX_TIMEOUT)
        if proto == "tcp":
            verdict = await _probe_tcp(dst, port, timeout)
        elif proto == "udp":
            verdict = await _probe_udp(dst, port, timeout)
        else:
            verdict = f"error:unknown protocol {proto!r}"
    except (KeyError, TypeError, ValueError) as exc:
        verdict = f"error:bad probe: {exc}"
    except OSError as exc:
        verdict = _error_verdict(exc)
    elapsed = round(time.monotonic() - started, 4)
    return {**spec, "verdict": verdict, "elapsed": elapsed}


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _handle(line: bytes, hello: dict[str, Any]) -> None:
    try:
        command = json.loads(line)
        if not isinstance(command, dict):
            raise ValueError("command is not an object")
    except ValueError as exc:
        _emit({"id": None, "error": f"bad command: {exc}"})
        return
    request_id = command.get("id")
    if command.get("ping"):
        _emit({**hello, "id": request_id})
    elif isinstance(command.get("hold"), dict):
        await _hold(str(request_id), command["hold"])
    elif command.get("release") is not None:
        _releases.setdefault(str(command["release"]), asyncio.Event()).set()
    elif isinstance(command.get("probes"), list):
        results = await asyncio.gather(*(_probe(spec) for spec in command["probes"]))
        _emit({"id": request_id, "results": results})
    else:
        _emit({"id": request_id, "error": "unknown command"})


async def _serve(name: str, ports: tuple[int, ...], echo_ports: tuple[int, ...] = ()) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    servers = await _start_servers(name, ports)
    servers += await _start_echo_servers(echo_ports)
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    hello = {"ready": True, "pod": name, "pid": os.getpid(), "ports": list(ports)}
    _emit({**hello, "id": "ready"})
    tasks: set[asyncio.Task[None]] = set()

    async def read_commands() -> None:
        while line := await reader.readline():
            if line.strip():
                task = asyncio.create_task(_handle(line, hello))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    reading = asyncio.create_task(read_commands())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    for task in (reading, stopping, *tasks):
        task.cancel()
    for server in servers:
        server.close()


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def parse_ports(text: str) -> tuple[int, ...]:
    """Parse `80,81,5353` into a tuple of distinct valid ports, in order."""
    ports: list[int] = []
    for part in text.split(","):
        if not part.strip():
            continue
        port = int(part)
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} out of range")
        if port not in ports:
            ports.append(port)
    if not ports:
        raise ValueError("no ports")
    return tuple(ports)


def main(argv: list[str] | None = None) -> int:
    """Entry point: serve until stdin closes or a termination signal arrives."""
    parser = argparse.ArgumentParser(prog="podproc", description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the pod's name, as its servers answer")
    parser.add_argument(
        "--ports",
        type=parse_ports,
        default=DEFAULT_PORTS,
        help="comma-separated TCP+UDP ports to serve (default 80,81)",
    )
    parser.add_argument(
        "--echo-ports",
        type=lambda text: parse_ports(text) if text else (),
        default=(),
        help="comma-separated TCP ports that echo lines back (held connections)",
    )
    args = parser.parse_args(argv)
    _raise_fd_limit()
    asyncio.run(_serve(args.name, args.ports, args.echo_ports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
