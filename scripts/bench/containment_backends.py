"""Benchmark: the containment rulesets and the drop-counter read on both backends.

One sandbox pod. Per round, for each backend in turn (interleaved, so machine noise hits both
alike): apply (through the real dataplane worker) a full ruleset (ingress and egress isolated
with N peers, quarantine with a forensic CIDR, node guard with the default guarded ports and a
blocked address), read its drop counters through the worker op `counters` (what the flow
collector does every window), then delete it. Prints medians and p99 per backend and the
iptables/nftables ratio of the medians. Needs root and ipset.
Usage: .venv/bin/python scripts/bench/containment_backends.py [--rounds 15] [--peers 100]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import sys
import time
from typing import Any

import benchlib

from agent.calc import intervals, ruleset
from agent.dataplane import backends, netns, protocol
from agent.dataplane import client as dp_client
from testbed.sandbox import topology

PEER_BASE = int(ipaddress.IPv4Address("198.19.0.0"))
GUARDED = ((6, 22, 22), (6, 445, 445), (6, 10250, 10250), (6, 30000, 32767), (17, 30000, 32767))


def full_ruleset(peers: int) -> ruleset.PodRuleset:
    addrs = tuple(ruleset.AddrRange(4, PEER_BASE + 2 * i, PEER_BASE + 2 * i) for i in range(peers))
    direction = ruleset.DirectionRuleset(True, addrs, (), ("bench/p",))
    return ruleset.PodRuleset(
        "bench",
        "pod",
        ingress=direction,
        egress=direction,
        quarantine=ruleset.Quarantine(allow_from=(intervals.cidr_range("198.18.250.0/24"),)),
        node_guard=ruleset.NodeGuard(
            node_addrs=(intervals.address_range("198.18.0.1"),),
            ports=tuple(ruleset.ProtoPorts(p, ruleset.PortRange(a, b)) for p, a, b in GUARDED),
            blocked=(intervals.address_range("169.254.169.254"),),
        ),
    )


async def rounds(args: argparse.Namespace, target: netns.Target) -> dict[str, Any]:
    client = dp_client.WorkerClient(timeout=30)
    applies: dict[str, list[float]] = {b: [] for b in benchlib.BACKENDS}
    reads: dict[str, list[float]] = {b: [] for b in benchlib.BACKENDS}
    rs = full_ruleset(args.peers)
    try:
        for _ in range(args.rounds):
            for name in benchlib.BACKENDS:
                be = backends.get(name)
                program = be.render(rs, list(target.interfaces))
                start = time.perf_counter()
                await backends.commit(client, be, target, program)
                applies[name].append((time.perf_counter() - start) * 1000)
                for _ in range(args.reads):
                    start = time.perf_counter()
                    request = protocol.ReadCounters(
                        (protocol.CounterTarget("k", target.path, target.ino),), name
                    )
                    counts = (await client.call(request)).values
                    reads[name].append((time.perf_counter() - start) * 1000)
                    assert "deny.ingress.quarantine.enforce" in counts["k"], counts
                await backends.delete(client, be, target)
    finally:
        await client.close()
    return {"apply_ms": applies, "counters_ms": reads}


def main() -> int:
    parser = argparse.ArgumentParser()
    benchlib.common_args(parser)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--reads", type=int, default=10)
    parser.add_argument("--peers", type=int, default=100)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.reads, args.peers = 2, 2, 10
    with topology.Sandbox() as sandbox:
        node = sandbox.add_node("node-1")
        pod = sandbox.add_pod(node, "bench", "pod", ipv6=False)
        target = netns.Target(pod.netns_path, os.stat(pod.netns_path).st_ino, (pod.interface,))
        raw = asyncio.run(rounds(args, target))
    figures: dict[str, Any] = {}
    for measure, per_backend in raw.items():
        stats = {b: benchlib.summary(v) for b, v in per_backend.items()}
        ratio = stats["iptables"]["median"] / stats["nftables"]["median"]
        figures[measure] = {**stats, "ratio_iptables_to_nftables": round(ratio, 2)}
        for b, s in stats.items():
            print(f"{measure} {b}: median {s['median']:.1f} ms, p99 {s['p99']:.1f} ms (n={s['n']})")
        print(f"{measure} iptables/nftables median ratio: {ratio:.2f}")
    benchlib.result("containment_backends", args, peers=args.peers, **figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
