"""Benchmark: a pod's first commit (no podseg table in its namespace yet), the whole script
through libnftables (the old way) against the two steps of `agent.dataplane.nft.firstfill`,
and where the time of each goes.

Fixture: the pods of `cold_start.py`'s "broad peers" node (their rulesets compiled without
root or agent: ~3,000 peer elements each, most in address interval sets, the rest in
`addr . proto . port` hash sets). Each sample commits one pod's ruleset (`--pending`: after a
pending table as podseg-cni leaves one) into a fresh namespace through the worker's own
`commit` (in this process, as a worker thread runs it), then closes the namespace's
libnftables context as the worker does after a big command (`Namespaces.shed`: the close waits
in the kernel when the transaction deleted something). Old and new alternate sample by sample,
so machine noise hits both alike; the element encodings the worker keeps are dropped before
every sample (no pod finds its sets encoded already). Also times, on separate namespaces, the
parts: the whole script (old) and the skeleton (step 1) through libnftables, the element
transaction alone (step 2's kernel time), the pure split and encoding.

Prints medians and p99 (ms) of each, the ratio new/old, the target (a first commit with its
context close at most half the whole script's, same run) as MET / NOT MET, and
`RESULT {json}`. Needs root.
Usage:
  .venv/bin/python scripts/bench/first_commit.py [--samples 41] [--pods 12] [--pending]
      [--quick]
"""

from __future__ import annotations

import argparse
import functools
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import benchlib
import churn
import cold_start
import time_to_enforce as tte

from agent.calc import compile as calc_compile
from agent.calc import containment, ruleset
from agent.calc import desired as calc_desired
from agent.calc import services as calc_services
from agent.dataplane import protocol
from agent.dataplane.nft import firstfill, pending, setelem
from agent.dataplane.nft import render as render_nft
from agent.dataplane.worker import namespaces
from agent.dataplane.worker import nft as worker_nft

GOAL_RATIO = 0.5
PENDING_TABLE = (
    f"table inet {pending.TABLE} {{\n"
    '  comment "podseg pending pod=x/y"\n'
    "  chain input {\n    type filter hook input priority filter - 10; policy drop;\n  }\n"
    "}\n"
)


def rulesets(args: argparse.Namespace) -> list[ruleset.PodRuleset]:
    """The first `--pods` local pods' rulesets of the cold-start fixture."""
    objs = [
        *(tte.app_namespace(a) for a in range(10)),
        *(tte.remote_namespace(n) for n in range(tte.REMOTE_NAMESPACES)),
        *(tte.policy(i, cold_start.APPS) for i in range(args.policies)),
        *(
            cold_start.broad_policy(a, "wide-a", ["t0", "t1", "t2"], range(0, 40))
            for a in range(10)
        ),
        *(
            cold_start.broad_policy(a, "wide-b", ["t3", "t4", "t5"], range(10, 50))
            for a in range(10)
        ),
        *(churn.remote(j, (j // 100) % tte.ROLES) for j in range(args.remote_pods)),
        *(
            tte.local_pod(k, f"198.18.{k // 200}.{k % 200 + 2}", cold_start.APPS)
            for k in range(args.pods)
        ),
    ]
    st = benchlib.store_of(objs)
    cluster = calc_desired.Cluster(
        namespaces=st.namespaces,
        nodes=st.nodes,
        policies=st.policy_index(),
        peers=calc_compile.build_index(st.namespaces, st.pods.values()),
        services=calc_services.build_index(st.services.values(), st.endpointslices.values()),
        guard_ports=containment.parse_ports(containment.DEFAULT_NODE_GUARD_PORTS),
    )
    local = [p for _, p in sorted(st.pods.items()) if p.node_name == "node-1"]
    return [calc_desired.desired(p, cluster).ruleset for p in local]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def fresh_netns(tag: str, with_pending: bool) -> Iterator[tuple[str, int]]:
    """A new namespace `psg-<random>-<tag>` with an eth0 (and the pending table); its path and
    inode. Deleted afterwards."""
    name = f"psg-{secrets.token_hex(3)}-{tag}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        if with_pending:
            subprocess.run(
                ["ip", "netns", "exec", name, "nft", "-f", "-"],
                input=PENDING_TABLE,
                text=True,
                check=True,
                capture_output=True,
            )
        path = f"/run/netns/{name}"
        yield path, os.stat(path).st_ino
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def _ms(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return (time.perf_counter() - started) * 1000, out


def sample(
    ns: namespaces.Namespaces, script: str, way: str, with_pending: bool
) -> tuple[float, float]:
    """(commit ms, context close ms) of one first commit of `script` the `way` given."""
    setelem.clear_cache()
    firstfill.LEAST = 256 if way == "new" else 1 << 60
    with fresh_netns(way, with_pending) as (path, ino):
        commit_ms, done = _ms(lambda: worker_nft.commit(ns, protocol.Commit(path, ino, script)))
        assert done.generation is not None
        shed_ms, _ = _ms(ns.shed)
        ns.forget([ino])
    return commit_ms, shed_ms


def parts(ns: namespaces.Namespaces, script: str) -> dict[str, float]:
    """The parts of both ways, each on a fresh namespace (no pending table)."""
    setelem.clear_cache()
    out: dict[str, float] = {}
    out["split"], split = _ms(lambda: firstfill.split(script, 0))
    assert split is not None
    out["encode"], (data, acked) = _ms(
        lambda: setelem.fill_batch(
            render_nft.TABLE, render_nft.STATE_CHAIN, split.state, split.fills, 1 << 12
        )
    )
    for label, text in (("libnft_whole", script), ("libnft_skeleton", split.script)):
        with fresh_netns("part", False) as (path, ino):
            out[label], _ = _ms(functools.partial(ns.run, path, ino, text))
            out[label + "_close"], _ = _ms(ns.shed)
            if label == "libnft_skeleton":
                with ns.entered(path, ino) as ident:
                    sock = ns.element_socket(ident)
                    assert worker_nft._room(sock, len(data))
                    send = functools.partial(worker_nft._send_batch, data, acked, sock)
                    out["netlink_elements"], _ = _ms(send)
            ns.forget([ino])
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    benchlib.common_args(parser)
    parser.add_argument("--samples", type=int, default=41, help="first commits per way")
    parser.add_argument("--pods", type=int, default=12, help="distinct pods of the fixture")
    parser.add_argument("--pending", action="store_true", help="a pending table is there")
    parser.add_argument("--remote-pods", type=int, default=10_000)
    parser.add_argument("--policies", type=int, default=1_000)
    args = parser.parse_args()
    if args.quick:
        args.samples, args.pods, args.remote_pods, args.policies = 3, 2, 2_000, 100
    if os.geteuid() != 0:
        print("first_commit: needs root")
        return 2
    load_before = os.getloadavg()
    pods = rulesets(args)
    scripts = [pending.delete_script() + render_nft.render(rs, ("eth0",)).script for rs in pods]
    counts = [s.elements for s in map(lambda t: firstfill.split(t, 0), scripts) if s]
    print(
        f"first commit: {len(pods)} pods of the broad-peers fixture, "
        f"{min(counts)}-{max(counts)} peer elements each, {args.samples} samples per way"
        f"{', after a pending table' if args.pending else ''}; "
        f"load average {load_before[0]:.2f} before"
    )
    ns = namespaces.Namespaces()
    figures: dict[str, list[float]] = {}
    saved = firstfill.LEAST
    try:
        for n in range(args.samples):
            script = scripts[n % len(scripts)]
            for way in ("old", "new") if n % 2 == 0 else ("new", "old"):
                commit_ms, shed_ms = sample(ns, script, way, args.pending)
                figures.setdefault(f"{way}_commit", []).append(commit_ms)
                figures.setdefault(f"{way}_close", []).append(shed_ms)
                figures.setdefault(f"{way}_total", []).append(commit_ms + shed_ms)
        firstfill.LEAST = saved
        for n in range(min(args.samples, 2 * len(scripts))):
            for label, value in parts(ns, scripts[n % len(scripts)]).items():
                figures.setdefault(f"part_{label}", []).append(value)
    finally:
        firstfill.LEAST = saved
    load_after = os.getloadavg()
    summaries = {label: benchlib.summary(values) for label, values in figures.items()}
    for label, s in summaries.items():
        print(f"  {label:28s} median {s['median']:7.2f} ms  p99 {s['p99']:7.2f} ms  (n={s['n']})")
    ratios = {
        key: summaries[f"new_{key}"]["median"] / summaries[f"old_{key}"]["median"]
        for key in ("commit", "total")
    }
    print(
        f"  new/old: commit {ratios['commit']:.2f}, commit + context close {ratios['total']:.2f}"
        f"; load average {load_after[0]:.2f} after"
    )
    targets = [
        benchlib.target(
            "first-commit",
            f"{ratios['total']:.2f}",
            ratios["total"] <= GOAL_RATIO,
            f"a first commit with its context close <= {GOAL_RATIO} x the whole script's, same run",
        )
    ]
    benchlib.result(
        "first_commit",
        args,
        targets=targets,
        figures=summaries,
        ratios=ratios,
        load=[round(load_before[0], 2), round(load_after[0], 2)],
        pending=args.pending,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
