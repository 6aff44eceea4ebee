"""Benchmark: per-packet cost and apply time of the nftables vs the iptables backend.

Builds a sandbox node with two pods (client, server). The server runs a TCP echo service and a
discard service; the client measures (1) new-connection round trips (connect, 64-byte request,
64-byte reply, close: every connection passes the peer-set lookup on both sides) and (2) bulk
throughput over one established connection. Conditions, interleaved round by round so machine
noise hits them alike: no rules, then each backend with the server's ingress and the client's
egress isolated and N peers allowed (the real peer among N-1 others, non-adjacent addresses so
nothing merges into ranges). Also times the apply of each ruleset through the dataplane worker.

Prints medians, p99 and ratios to the same run's no-rules baseline. Needs root and ipset.
Usage: .venv/bin/python scripts/bench/backend_cost.py [--rounds 5] [--conns 1000] [--mb 256]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from agent.calc import ruleset
from agent.dataplane import backends, netns
from agent.dataplane import client as dp_client
from testbed.sandbox import topology

PORT_ECHO, PORT_BULK = 5001, 5002
PEER_BASE = int(ipaddress.IPv4Address("198.19.0.0"))

SERVER = r"""
import socket, sys, threading
def echo(c):
    with c:
        while True:
            d = c.recv(65536)
            if not d: return
            c.sendall(d)
def sink(c):
    with c:
        while c.recv(1 << 20): pass
def serve(port, fn):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(512)
    while True:
        c, _ = s.accept(); threading.Thread(target=fn, args=(c,), daemon=True).start()
threading.Thread(target=serve, args=(ECHO, echo), daemon=True).start()
threading.Thread(target=serve, args=(BULK, sink), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
""".replace("ECHO", str(PORT_ECHO)).replace("BULK", str(PORT_BULK))

CLIENT = r"""
import json, socket, sys, time
dst = sys.argv[1]
for line in sys.stdin:
    cmd, n = line.split()
    n = int(n)
    if cmd == "conn":
        out, msg = [], b"x" * 64
        for _ in range(n):
            t = time.perf_counter()
            s = socket.create_connection((dst, ECHO), timeout=2)
            s.sendall(msg); got = b""
            while len(got) < 64: got += s.recv(64)
            s.close()
            out.append((time.perf_counter() - t) * 1e6)
        print(json.dumps(out), flush=True)
    else:
        chunk = b"\0" * (1 << 16)
        s = socket.create_connection((dst, BULK), timeout=5)
        t = time.perf_counter()
        for _ in range(n * 16): s.sendall(chunk)
        s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
        print(json.dumps(n / (time.perf_counter() - t)), flush=True)
""".replace("ECHO", str(PORT_ECHO)).replace("BULK", str(PORT_BULK))


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def peer_ruleset(name: str, peer_ip: str, peers: int, ingress: bool) -> ruleset.PodRuleset:
    real = int(ipaddress.IPv4Address(peer_ip))
    addrs = {real} | {PEER_BASE + 2 * i for i in range(peers - 1)}
    elements = tuple(
        ruleset.PeerPort(ruleset.AddrRange(4, a, a), 6, ruleset.PortRange(PORT_ECHO, PORT_BULK))
        for a in sorted(addrs)
    )
    d = ruleset.DirectionRuleset(isolated=True, port_peers=elements, policies=("bench/p",))
    if ingress:
        return ruleset.PodRuleset("bench", name, ingress=d)
    return ruleset.PodRuleset("bench", name, egress=d)


class Cell:
    def __init__(self, label: str) -> None:
        self.label = label
        self.conn_us: list[float] = []
        self.mbps: list[float] = []
        self.apply_ms: list[float] = []


async def program(
    client: dp_client.WorkerClient,
    name: str,
    targets: dict[str, netns.Target],
    rulesets: dict[str, ruleset.PodRuleset],
) -> float:
    """Remove both backends' state, then apply `name` (unless "none"); return apply ms."""
    elapsed = 0.0
    for target in targets.values():
        await backends.delete(client, backends.Nftables(), target)
        await backends.delete(client, backends.Iptables(), target)
    if name == "none":
        return 0.0
    chosen = backends.get(name.split("-")[0])
    for pod, target in targets.items():
        prog = chosen.render(rulesets[pod], target.interfaces)
        started = time.perf_counter()
        await backends.commit(client, chosen, target, prog)
        elapsed += time.perf_counter() - started
    return elapsed * 1000 / len(targets)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--peers", type=int, nargs="+", default=[100, 10000])
    args = parser.parse_args()
    labels = ["none"] + [f"{b}-{n}" for n in args.peers for b in ("nftables", "iptables")]
    cells = {label: Cell(label) for label in labels}
    with topology.Sandbox() as sandbox:
        node = sandbox.add_node("node-1")
        server, cli = sandbox.add_pods(node, [("bench", "server"), ("bench", "client")])
        srv = subprocess.Popen(
            ["ip", "netns", "exec", server.netns, sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        cln = subprocess.Popen(
            ["ip", "netns", "exec", cli.netns, sys.executable, "-c", CLIENT, server.ipv4],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert srv.stdin and srv.stdout and cln.stdin and cln.stdout
        try:
            assert srv.stdout.readline().strip() == "ready"

            def ask(cmd: str) -> Any:
                assert cln.stdin and cln.stdout
                cln.stdin.write(cmd + "\n")
                cln.stdin.flush()
                return json.loads(cln.stdout.readline())

            targets = {
                "server": netns.Target(
                    server.netns_path, os.stat(server.netns_path).st_ino, ("eth0",)
                ),
                "client": netns.Target(cli.netns_path, os.stat(cli.netns_path).st_ino, ("eth0",)),
            }
            asyncio.run(run_rounds(args, cells, labels, targets, server, cli, ask))
        finally:
            for proc in (srv, cln):
                proc.kill()
                proc.wait()
    report(cells, labels, args)
    return 0


async def run_rounds(
    args: argparse.Namespace,
    cells: dict[str, Cell],
    labels: list[str],
    targets: dict[str, netns.Target],
    server: topology.SandboxPod,
    cli: topology.SandboxPod,
    ask: Any,
) -> None:
    client = dp_client.WorkerClient(timeout=60)
    try:
        for rnd in range(args.rounds):
            for label in labels if rnd % 2 == 0 else list(reversed(labels)):
                peers = int(label.split("-")[1]) if label != "none" else 0
                rulesets = {
                    "server": peer_ruleset("server", cli.ipv4, peers, ingress=True),
                    "client": peer_ruleset("client", server.ipv4, peers, ingress=False),
                }
                cells[label].apply_ms.append(await program(client, label, targets, rulesets))
                ask("conn 50")  # warm-up
                cells[label].conn_us.extend(ask(f"conn {args.conns}"))
                cells[label].mbps.append(ask(f"bulk {args.mb}"))
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
        await program(client, "none", targets, {})
    finally:
        await client.close()


def report(cells: dict[str, Cell], labels: list[str], args: argparse.Namespace) -> None:
    base = cells["none"]
    base_conn = statistics.median(base.conn_us)
    base_mbps = statistics.median(base.mbps)
    print(
        f"\nbackend cost: {args.rounds} rounds x {args.conns} new TCP connections "
        f"+ {args.mb} MB bulk per condition (client egress + server ingress isolated)\n"
    )
    print(
        f"{'condition':<18}{'conn p50 us':>12}{'p99 us':>10}{'vs none':>9}"
        f"{'MB/s p50':>10}{'vs none':>9}{'apply p50 ms':>14}{'apply max':>11}"
    )
    for label in labels:
        c = cells[label]
        conn = statistics.median(c.conn_us)
        mbps = statistics.median(c.mbps)
        applied = statistics.median(c.apply_ms)
        print(
            f"{label:<18}{conn:>12.1f}{pct(c.conn_us, 0.99):>10.1f}{conn / base_conn:>9.3f}"
            f"{mbps:>10.0f}{mbps / base_mbps:>9.3f}{applied:>14.1f}{max(c.apply_ms):>11.1f}"
        )


if __name__ == "__main__":
    sys.exit(main())
