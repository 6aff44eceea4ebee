"""Hand-made packets sent from inside a network namespace, and a capture that says whether
they arrived: what a pod with NET_RAW can do (forged sources, forged ARP and neighbour
advertisements, neighbour-discovery-typed packets to any address).

Run inside a namespace as `python -m tests.support.rawpackets <kind> <args...>` (`send` and
`capture` below); the builders are plain functions of bytes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import pathlib
import select
import socket
import struct
import subprocess
import sys
import time

ETH_P_ALL, ETH_P_IP, ETH_P_ARP = 0x0003, 0x0800, 0x0806
ROOT = pathlib.Path(__file__).resolve().parents[2]  # where `-m tests.support...` resolves
ND_SOLICIT, ND_ADVERT = 135, 136


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def udp4(src: str, dst: str, sport: int, dport: int, data: bytes) -> bytes:
    """An IPv4 UDP datagram with header (as an IP_HDRINCL raw socket sends it)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        1,
        0,
        64,
        17,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + udp


def ipv6(src: str, dst: str, next_header: int, payload: bytes, hop_limit: int = 64) -> bytes:
    """An IPv6 packet around `payload`; its upper-layer checksum (UDP, ICMPv6) is filled in."""
    s, d = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    offset = {17: 6, 58: 2}[next_header]
    pseudo = s + d + struct.pack("!IxxxB", len(payload), next_header)
    payload = payload[:offset] + b"\0\0" + payload[offset + 2 :]
    payload = (
        payload[:offset] + struct.pack("!H", checksum(pseudo + payload)) + payload[offset + 2 :]
    )
    header = struct.pack("!IHBB", 6 << 28, len(payload), next_header, hop_limit)
    return header + s + d + payload


def udp6(src: str, dst: str, sport: int, dport: int, data: bytes) -> bytes:
    return ipv6(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data)


def nd(kind: int, src: str, dst: str, target: str, mac: bytes, hop_limit: int = 255) -> bytes:
    """A neighbour solicitation (with our link-layer address) or an unsolicited, overriding
    advertisement (`target` is at `mac`)."""
    flags = 0x20000000 if kind == ND_ADVERT else 0  # override
    option = struct.pack("!BB", 1 if kind == ND_SOLICIT else 2, 1) + mac
    body = struct.pack("!BBHI", kind, 0, 0, flags) + ipaddress.IPv6Address(target).packed
    return ipv6(src, dst, 58, body + option, hop_limit)


def arp_request(sender_mac: bytes, sender_ip: str, target_ip: str) -> bytes:
    """An ARP request claiming `sender_ip` is at `sender_mac` (as a frame's payload)."""
    return (
        struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 1)
        + sender_mac
        + ipaddress.IPv4Address(sender_ip).packed
        + bytes(6)
        + ipaddress.IPv4Address(target_ip).packed
    )


def mac_of(interface: str) -> bytes:
    with open(f"/sys/class/net/{interface}/address") as f:
        return bytes.fromhex(f.read().strip().replace(":", ""))


def send(kind: str, args: list[str]) -> None:
    """Send one forged packet from the current namespace (see `run_send`)."""
    if kind == "raw4":  # src dst: UDP to port 9999 through an IP_HDRINCL raw socket
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        sock.sendto(udp4(args[0], args[1], 4444, 9999, b"forged"), (args[1], 0))
        return
    if kind in ("raw6", "ns6", "na6", "mld6"):  # src dst [target]
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        if kind == "raw6":
            packet = udp6(args[0], args[1], 4444, 9999, b"forged")
        elif kind == "mld6":
            packet = ipv6(
                args[0], args[1], 58, struct.pack("!BBHH2x16s", 131, 0, 0, 0, bytes(16)), 1
            )
        else:
            code = ND_SOLICIT if kind == "ns6" else ND_ADVERT
            packet = nd(code, args[0], args[1], args[2], mac_of("eth0"))
        sock.sendto(packet, (args[1], 0))
        return
    # packet sockets: "frame4 <src> <dst> <dst mac> <claimed protocol>", "arp <ip> <target>"
    claimed = int(args[3], 0) if kind == "frame4" else ETH_P_ARP
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(claimed))
    sock.bind(("eth0", claimed))
    mine = mac_of("eth0")
    if kind == "frame4":
        frame = bytes.fromhex(args[2].replace(":", "")) + mine + struct.pack("!H", ETH_P_IP)
        frame += udp4(args[0], args[1], 4444, 9999, b"forged")
    else:
        frame = b"\xff" * 6 + mine + struct.pack("!H", ETH_P_ARP) + arp_request(mine, *args[:2])
    with contextlib.suppress(OSError):  # ENOBUFS: the device hook dropped it
        sock.send(frame)


def capture(interface: str, seconds: float, wanted: list[str]) -> dict[str, int]:
    """How many frames arriving on `interface` within `seconds` carry each of `wanted` as an
    IPv4/IPv6 source or destination address (a packet socket sees them before any filter)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((interface, ETH_P_ALL))
    print("ready", flush=True)
    packed = {w: ipaddress.ip_address(w).packed for w in wanted}
    seen = dict.fromkeys(wanted, 0)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            break
        frame, meta = sock.recvfrom(65536)
        if meta[2] == socket.PACKET_OUTGOING:
            continue
        for name, raw in packed.items():
            if raw in (frame[26:30], frame[30:34], frame[22:38], frame[38:54]):
                seen[name] += 1
    return seen


class Capture:
    """A capture running in namespace `netns` while the test sends (a context manager)."""

    def __init__(self, netns: str, interface: str, wanted: list[str], seconds: float) -> None:
        self.proc = subprocess.Popen(
            [
                *("ip", "netns", "exec", netns, sys.executable, "-m", __name__, "capture"),
                *(interface, str(seconds), *wanted),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def result(self) -> dict[str, int]:
        out = self.proc.communicate(timeout=30)[0]
        seen: dict[str, int] = json.loads(out)
        return seen


LISTEN = """
import select, socket, sys, time
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9999))
print("ready", flush=True)
got, deadline = [], None
while deadline is None or time.monotonic() < deadline:
    wait = 30.0 if deadline is None else max(0.0, deadline - time.monotonic())
    ready = select.select([s, sys.stdin], [], [], wait)[0]
    if s in ready:
        got.append(s.recvfrom(100)[1][0])
    if sys.stdin in ready and deadline is None:
        sys.stdin.readline()
        deadline = time.monotonic() + float(sys.argv[2])  # stragglers
    if not ready:
        break
print(" ".join(got), flush=True)
"""


def received(
    listener: str, listen: str, sender: str, sends: list[tuple[str, ...]], linger: float = 0.5
) -> list[str]:
    """The sources of the UDP datagrams namespace `listener` got on `listen`:9999 while
    namespace `sender` sent `sends` (each `run_send` arguments), and `linger` s after."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", listener, sys.executable, "-c", LISTEN, listen, str(linger)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for send in sends:
            run_send(sender, *send)
        return proc.communicate("done\n", timeout=20)[0].split()
    finally:
        proc.kill()
        proc.wait()


def run_send(netns: str, kind: str, *args: str) -> None:
    """Send one forged packet of `kind` from inside `netns`."""
    subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-m", __name__, "send", kind, *args],
        check=True,
        capture_output=True,
        timeout=30,
        cwd=ROOT,
    )


def main() -> None:
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "send":
        send(rest[0], rest[1:])
    else:
        print(json.dumps(capture(rest[0], float(rest[1]), rest[2:])), flush=True)


if __name__ == "__main__":
    main()
