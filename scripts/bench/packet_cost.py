"""Benchmark: per-packet cost of podseg's ruleset as peers grow.

Two pods of a sandbox node (real namespaces, veths on the node bridge). Configurations, run
interleaved in every round (so machine noise hits all of them alike):
  none     no podseg tables at all
  N peers  the server's ingress and the client's egress isolated by podseg rulesets whose
           peer sets hold N (address, tcp, port) elements, the real peer among them
           (N = 100, 1,000, 10,000; 100 and 10,000 in --quick)
Measured per configuration and round: TCP request/response latency (sockperf ping-pong,
64-byte messages; sockperf reports half the round trip) median and p99, and TCP throughput
(iperf3, one stream). Prints medians over rounds and ratios to `none` of the same run, then
target 2c (latency and throughput within 3% of no rules, and flat as peers grow from 100 to
10,000) as MET / NOT MET, then `RESULT {json}`.

The rulesets are programmed through the real dataplane worker with the chosen backend
(`--backend nftables|iptables`), as the agent programs them.
Needs root, sockperf and iperf3 (scripts/setup.sh installs them). Usage:
  .venv/bin/python scripts/bench/packet_cost.py [--backend nftables] [--quick] [--rounds 5]
      [--peer-shape exact|ranges]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

import benchlib

from agent.calc import intervals, ruleset
from agent.dataplane import backends, netns
from agent.dataplane import client as dataplane_backend
from testbed.sandbox import cluster as sandbox_cluster
from testbed.sandbox import topology

SOCKPERF_PORT = 11111
IPERF_PORT = 5201
TCP = 6
FILLER_BASE = int(intervals.address_range("198.19.200.0").first)


def peer_rules(peer_ip: str, n: int, shape: str = "exact") -> ruleset.DirectionRuleset:
    """An isolated direction allowing `peer_ip` and n-1 filler addresses on the two ports.

    `shape` "exact": single addresses on single ports (the nftables hash sets); "ranges":
    fillers of two addresses and each port widened to a two-port range, so that every element
    is an address in its port spec's interval set, reached through the verdict map."""
    real = intervals.address_range(peer_ip)
    width = 1 if shape == "ranges" else 0
    fillers = [
        ruleset.AddrRange(4, FILLER_BASE + 4 * i, FILLER_BASE + 4 * i + width) for i in range(n - 1)
    ]
    triples = [
        (addr, TCP, ruleset.PortRange(port, port + width))
        for addr in [real, *fillers]
        for port in (SOCKPERF_PORT, IPERF_PORT)
    ]
    # one element per (address, port): both ports per peer -> 2n elements; n counts peers
    return ruleset.DirectionRuleset(
        isolated=True,
        port_peers=intervals.canonical_peer_ports(triples),
        policies=("bench/peers",),
    )


@dataclasses.dataclass(frozen=True)
class Pair:
    """The benchmark's two pods and the directory linking their sandbox's namespaces (only
    that sandbox is searched: another one on the machine may hold the same addresses)."""

    netns_dir: str
    server: topology.SandboxPod
    client: topology.SandboxPod


def configure(backend: str, pair: Pair, peers: int, shape: str = "exact") -> None:
    """Program both pods' rulesets (`peers` peers; 0: no tables) through the real dataplane
    worker and the chosen backend, as the agent does; the other backend's state is removed."""
    asyncio.run(_configure(backend, pair, peers, shape))


async def _configure(backend: str, pair: Pair, peers: int, shape: str) -> None:
    server, client = pair.server, pair.client
    worker = dataplane_backend.WorkerClient(timeout=60)
    try:
        index = netns.Index(await worker.scan(pair.netns_dir, proc=False))
        for pod, peer, direction in ((server, client, "ingress"), (client, server, "egress")):
            target = index.find([pod.ipv4])
            if target is None:
                raise SystemExit(f"no namespace holds {pod.ipv4}")
            for name in backends.NAMES:
                await backends.delete(worker, backends.get(name), target)
            if peers == 0:
                continue
            rs = ruleset.PodRuleset(
                pod.namespace,
                pod.name,
                **{direction: peer_rules(peer.ipv4, peers, shape)},  # type: ignore[arg-type]
            )
            chosen = backends.get(backend)
            await backends.commit(worker, chosen, target, chosen.render(rs, target.interfaces))
    finally:
        await worker.close()


def listening(netns: str, ports: tuple[int, ...]) -> bool:
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "ss", "-ltnH"], capture_output=True, text=True
    ).stdout
    return all(f":{port} " in out for port in ports)


def sockperf(client: topology.SandboxPod, server_ip: str, seconds: float) -> tuple[float, float]:
    prefix = ("ip", "netns", "exec", client.netns)
    return benchlib.sockperf_ping_pong(prefix, server_ip, SOCKPERF_PORT, seconds)


def iperf(client: topology.SandboxPod, server_ip: str, seconds: float) -> float:
    prefix = ("ip", "netns", "exec", client.netns)
    return benchlib.iperf_gbps(prefix, server_ip, IPERF_PORT, seconds)


@dataclasses.dataclass
class Samples:
    """Per peer count: one latency p50 and p99 (us) and throughput (Gbit/s) per round."""

    lat50: dict[int, list[float]]
    lat99: dict[int, list[float]]
    gbps: dict[int, list[float]]


def parse_args() -> tuple[argparse.Namespace, list[int]]:
    """The arguments and the peer counts to measure (0: no podseg tables)."""
    parser = argparse.ArgumentParser()
    benchlib.common_args(parser)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="per tool run")
    parser.add_argument(
        "--peer-shape",
        choices=("exact", "ranges"),
        default="exact",
        help="single addresses on single ports, or address and port ranges",
    )
    args = parser.parse_args()
    sizes = [0, 100, 1_000, 10_000]
    if args.quick:
        sizes, args.rounds, args.seconds = [0, 100, 10_000], 1, 1.0
    for tool in ("sockperf", "iperf3"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: run scripts/setup.sh")
    return args, sizes


def start_servers(server: topology.SandboxPod) -> list[subprocess.Popen[bytes]]:
    """sockperf and iperf3 servers in the server pod."""
    return [
        subprocess.Popen(
            [
                *("ip", "netns", "exec", server.netns, "sockperf", "server", "--tcp"),
                *("-i", server.ipv4, "-p", str(SOCKPERF_PORT)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [
                *("ip", "netns", "exec", server.netns, "iperf3", "-s"),
                *("-B", server.ipv4, "-p", str(IPERF_PORT)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]


def measure(
    args: argparse.Namespace,
    sizes: list[int],
    pair: Pair,
) -> Samples:
    """`--rounds` rounds, each measuring every peer count once in a shuffled order; the tables
    are removed at the end."""
    rng = random.Random(8)
    samples = Samples({n: [] for n in sizes}, {n: [] for n in sizes}, {n: [] for n in sizes})
    for _ in range(args.rounds):
        order = list(sizes)
        rng.shuffle(order)
        for n in order:
            configure(args.backend, pair, n, args.peer_shape)
            p50, p99 = sockperf(pair.client, pair.server.ipv4, args.seconds)
            samples.lat50[n].append(p50)
            samples.lat99[n].append(p99)
            samples.gbps[n].append(iperf(pair.client, pair.server.ipv4, args.seconds))
    configure(args.backend, pair, 0, args.peer_shape)
    return samples


def report(sizes: list[int], samples: Samples) -> dict[str, Any]:
    """Print the medians per peer count and their ratios to `none`; returns them by count."""
    print("  peers     latency p50 us   p99 us   vs none   throughput Gbit/s   vs none")
    figures: dict[str, Any] = {}
    base_lat = statistics.median(samples.lat50[0])
    base_gbps = statistics.median(samples.gbps[0])
    for n in sizes:
        m50, m99, g = (
            statistics.median(samples.lat50[n]),
            statistics.median(samples.lat99[n]),
            statistics.median(samples.gbps[n]),
        )
        figures[str(n)] = {
            "latency_p50_us": m50,
            "latency_p99_us": m99,
            "gbps": g,
            "latency_ratio": m50 / base_lat,
            "gbps_ratio": g / base_gbps,
        }
        label = "none" if n == 0 else str(n)
        print(
            f"  {label:>6s}   {m50:14.2f} {m99:8.2f}   {m50 / base_lat:6.3f}x"
            f"   {g:17.2f}   {g / base_gbps:6.3f}x"
        )
    return figures


def target_2c(sizes: list[int], figures: dict[str, Any]) -> dict[str, Any]:
    """Target 2c: the most peers within 3% of no rules, and within 3% of the fewest peers."""
    top, low = figures[str(max(sizes))], figures[str(min(n for n in sizes if n))]
    worst = max(
        abs(top["latency_ratio"] - 1),
        abs(top["gbps_ratio"] - 1),
    )
    flat = max(
        abs(top["latency_p50_us"] / low["latency_p50_us"] - 1),
        abs(top["gbps"] / low["gbps"] - 1),
    )
    return benchlib.target(
        "2c",
        f"{max(sizes)} peers vs none: latency {top['latency_ratio']:.3f}x,"
        f" throughput {top['gbps_ratio']:.3f}x; {max(sizes)} vs"
        f" {min(n for n in sizes if n)} peers: {flat:.1%} apart",
        worst <= 0.03 and flat <= 0.03,
        "within 3% of no rules, and flat as peers grow from 100 to 10,000",
    )


def main() -> int:
    args, sizes = parse_args()
    with topology.Sandbox() as sandbox:
        node = sandbox.add_node("node-1")
        server, client = sandbox.add_pods(
            node, [("bench", "server"), ("bench", "client")], ipv6=False
        )
        servers = start_servers(server)
        try:
            sandbox_cluster.wait_until(
                lambda: listening(server.netns, (SOCKPERF_PORT, IPERF_PORT)),
                10,
                "benchmark servers listening",
            )
            started = time.monotonic()
            samples = measure(args, sizes, Pair(str(sandbox.netns_dir), server, client))
        finally:
            for proc in servers:
                proc.terminate()
                proc.wait(5)
        print(
            f"packet cost [{args.backend}, {args.peer_shape} peers]: {args.rounds} interleaved"
            f" rounds in {time.monotonic() - started:.0f} s; latency = sockperf half round trip"
        )
        figures = report(sizes, samples)
        targets = [target_2c(sizes, figures)]
        benchlib.result(
            "packet_cost", args, sizes=figures, targets=targets, peer_shape=args.peer_shape
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
