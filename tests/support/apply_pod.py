"""Commit a small isolating ruleset (peers in a set: an nftables set, or an ipset matched by
iptables' `set` match) in one namespace through the real dataplane worker:

    python -m tests.support.apply_pod /run/netns/<name> nftables|iptables

A separate process, so that a test can run it (and the worker it starts) under a reduced
capability bounding set (`setpriv`), as the DaemonSet's container runs. Exit status 0 when
the commit succeeded, 1 with the dataplane's error on stderr."""

from __future__ import annotations

import asyncio
import os
import sys

from agent.calc import ruleset
from agent.dataplane import backends, netns, protocol
from agent.dataplane import client as dp_client

RULESET = ruleset.PodRuleset(
    namespace="shop",
    pod="web",
    ingress=ruleset.DirectionRuleset(
        isolated=True, any_port_peers=(ruleset.AddrRange(4, 1, 1),), policies=("shop/d",)
    ),
    egress=ruleset.DirectionRuleset(isolated=True, policies=("shop/d",)),
)


async def apply(path: str, backend_name: str) -> protocol.Committed:
    backend = backends.get(backend_name)
    client = dp_client.WorkerClient(timeout=20)
    try:
        target = netns.Target(path, os.stat(path).st_ino, ("eth0",))
        return await backends.commit(client, backend, target, backend.render(RULESET, ["eth0"]))
    finally:
        await client.close()


def main(argv: list[str]) -> int:
    path, backend_name = argv
    try:
        asyncio.run(apply(path, backend_name))
    except Exception as exc:  # the test reads the reason
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
