"""Benchmark: one remote pod's label flip with broad peers, from the watch event to the new
sets being committed in the kernel of every affected local pod, in seven modes in the same run:
`nft` and `ipt`, the element patch derived from the calculator's change (`Backend.derive`: no
whole render, no whole diff; nftables sends it over netlink, iptables as one `ipset` batch);
`nft_render` and `ipt_render`, the same rulesets rendered whole and diffed against the last
ones (the render path); `ipt_whole`, every change applied whole; `nft_1t` and `ipt_1t`, `nft`
and `ipt` through a second worker limited to one thread (PODSEG_DATAPLANE_THREADS=1: one namespace
after another, as the worker did before it committed several at once), the same-run baseline
of the worker's threads.

Fixture ("broad peers"): 10,000 remote pods in 100 namespaces (10 teams, 50 roles, as
`time_to_enforce.py`); 5 local pods (app svc-0 in app-0) selected by two policies whose peers
are namespaceSelector (3 teams) x podSelector (40 of the 50 roles): about 1,000 canonical
address ranges per local pod, plus each policy's own (hit) elements. Each flip moves a team-t0
pod's role across the edge of the first policy's role window (r39 <-> r40), so every flip
changes the peers of all 5 local pods.

Per flip: the watch event is applied to the store and the incremental calculator
(`agent.calc.incremental`) once (timed, shared by the modes), then for each mode, in rotating
order and each starting on an idle worker (the worker gives a big request's memory back after
answering it), the 5 changed rulesets are derived or rendered and sent to the real dataplane
worker in one batch, as the sync layer does, and the batch's reply is awaited (the worker
answers after the kernel committed; the nftables modes and the iptables modes each have their
own worker, as an agent runs one backend). Each mode programs its own 5 real network namespaces
(`psg-<random6>-fl<mode><n>`, deleted at the end). A patch the worker does not vouch for is
applied whole (counted) inside the timing. After the run every namespace is read back: its
fingerprint must be the last ruleset's, the iptables namespaces' sets must hold exactly the
whole-apply namespaces' elements, and the `nft` namespaces' sets the `nft_render` ones'
(`mismatches`). Not covered: the agent's event loop and batching delay (see time_to_enforce.py
for the end-to-end agent figures).

Prints p50/p99 per mode (and the derive or render + diff part, the worker batch and the
worker's own time), the same-run ratios, the target per mode (p50 <= 5 ms, p99 <= 100 ms) and
ipt / nft <= 5x as MET / NOT MET, then `RESULT {json}`. Needs root, ipset and iptables.

`--baseline DIR` compares this checkout with another (its `agent` package: its client, its
wire format, its worker) in the same run: `--rounds` rounds per side of `--flips` flips of
`--modes` (default nft, nft_1t, ipt), each round a child process with DIR or this checkout on
PYTHONPATH, the two sides alternating (the order swapped every round, so neither always runs
after the other); it prints each side's p50/p99 over all its rounds, the worker batch and the
worker's own time, and the same-run ratios this / baseline. Usage:
  .venv/bin/python scripts/bench/flip_latency.py [--flips 60] [--quick]
  .venv/bin/python scripts/bench/flip_latency.py --baseline DIR [--rounds 6] [--flips 20]
      [--modes nft,nft_1t,ipt]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import secrets
import subprocess
import sys
import time
from typing import Any

import benchlib
import time_to_enforce as tte

from agent import store
from agent.calc import incremental
from agent.dataplane import backends, netns, protocol
from agent.dataplane import client as dp_client
from agent.dataplane.nft import render as render_nft
from agent.k8s import watch
from testbed.sandbox import tables

NODE = "node-1"
LOCAL_PODS = 5
P50_GOAL_MS, P99_GOAL_MS, RATIO_GOAL = 5.0, 100.0, 5.0
WINDOW = (0, 40)  # the first policy's roles: r0 .. r39
# nft / ipt: the element patch derived from the calculator's change (no whole render, no
# whole diff); *_render: the same ruleset rendered whole and diffed against the last one;
# ipt_whole: every change applied whole.
# nft_1t / ipt_1t: nft / ipt through a worker that works on one namespace at a time (one
# thread: the worker before it committed namespaces in parallel), the same-run baseline.
MODES = ("nft", "nft_render", "ipt", "ipt_render", "ipt_whole", "nft_1t", "ipt_1t")
BACKEND = {mode: "nftables" if mode.startswith("nft") else "iptables" for mode in MODES}
DERIVED = ("nft", "ipt", "nft_1t", "ipt_1t")
ONE_THREAD = ("nft_1t", "ipt_1t")
COMPARED = ("nft", "nft_1t", "ipt")  # what --baseline compares unless --modes says otherwise


def worker_of(mode: str) -> tuple[str, bool]:
    """The worker a mode's batches go to: one per backend (an agent runs one backend, so its
    worker never handles the other's requests between two flips) and thread count."""
    return BACKEND[mode], mode in ONE_THREAD


def broad_policy(name: str, teams: list[str], roles: range) -> dict[str, Any]:
    peer = {
        "namespaceSelector": {
            "matchExpressions": [{"key": "team", "operator": "In", "values": teams}]
        },
        "podSelector": {
            "matchExpressions": [
                {"key": "role", "operator": "In", "values": [f"r{r}" for r in roles]}
            ]
        },
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": "app-0", "name": name},
        "spec": {
            "podSelector": {"matchLabels": {"app": "svc-0"}},
            "ingress": [{"from": [peer], "ports": [{"port": 8080, "protocol": "TCP"}]}],
        },
    }


def cluster(remote_pods: int) -> store.Store:
    objs = [
        *(tte.app_namespace(a) for a in range(10)),
        *(tte.remote_namespace(n) for n in range(tte.REMOTE_NAMESPACES)),
        *(tte.remote_pod(j) for j in range(remote_pods)),
        broad_policy("wide-a", ["t0", "t1", "t2"], range(*WINDOW)),
        broad_policy("wide-b", ["t3", "t4", "t5"], range(10, 50)),
        # local pod k: l<10k> in app-0, app svc-0 (apps=1)
        *(tte.local_pod(10 * k, f"198.18.0.{k + 2}", 1, NODE) for k in range(LOCAL_PODS)),
    ]
    return benchlib.store_of(objs)


def flippers(remote_pods: int) -> list[int]:
    """Remote pods of team t0 (namespace r-<j % 100>, team t<j % 10>) at the window's last
    role r39: moving them to r40 takes them out of the first policy's peers."""
    edge = WINDOW[1] - 1
    return [j for j in range(remote_pods) if j % 10 == 0 and (j // 100) % tte.ROLES == edge]


class Namespace:
    """One mode's namespace for one local pod, and what the agent knows of it."""

    def __init__(self, name: str) -> None:
        self.name = name
        path = f"/run/netns/{name}"
        self.target = netns.Target(path, os.stat(path).st_ino, ("eth0",))
        self.program: backends.Program | None = None
        self.rs: Any = None
        self.known = backends.Known(None, None, None)


def make_netns(names: list[str]) -> None:
    for name in names:
        for args in (
            ("netns", "add", name),
            ("-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"),
            ("-n", name, "link", "set", "eth0", "up"),
            ("-n", name, "link", "set", "lo", "up"),
        ):
            subprocess.run(["ip", *args], capture_output=True, check=True)


def delete_netns(names: list[str]) -> None:
    for name in names:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


class Bench:
    def __init__(
        self,
        clients: dict[tuple[str, bool], dp_client.WorkerClient],
        st: store.Store,
        prefix: str,
        modes: tuple[str, ...] = MODES,
    ) -> None:
        self.modes = modes
        self.clients = {mode: clients[worker_of(mode)] for mode in modes}
        self.store = st
        self.calc = incremental.Calculator.of(
            NODE, pods=st.pods, namespaces=st.namespaces, policies=st.policies, nodes=st.nodes
        )
        self.calc.flush()
        self.local = sorted(k for k, p in st.pods.items() if p.node_name == NODE)
        self.spaces = {
            mode: {k: Namespace(f"{prefix}{m}{n}") for n, k in enumerate(self.local)}
            for m, mode in enumerate(modes)
        }
        self.times: dict[str, list[float]] = {mode: [] for mode in modes}
        self.kernel: dict[str, list[float]] = {mode: [] for mode in modes}
        self.prep: dict[str, list[float]] = {mode: [] for mode in modes}  # render + diff
        self.calc_ms: list[float] = []
        self.patched = {mode: 0 for mode in modes}
        self.derived = {mode: 0 for mode in modes}
        self.worker_own: dict[str, list[float]] = {mode: [] for mode in modes}
        self.fallbacks = {mode: 0 for mode in modes}
        self.changed: list[int] = []
        self.touched: list[tuple[str, int]] = []  # nft: (kernel set kind, its elements)

    async def program(self, mode: str, rulesets: dict[str, Any]) -> float:
        """Render and commit the changed pods' rulesets for `mode`, one batch; the kernel
        part's milliseconds (the batch round trip, fallbacks included)."""
        backend = backends.get(BACKEND[mode])
        requests: list[protocol.Request[Any]] = []
        programs = {}
        for key, rs in rulesets.items():
            space = self.spaces[mode][key]
            if mode in DERIVED:
                program = backend.derive(space.rs, space.program, rs, space.target.interfaces)
                self.derived[mode] += program.patch is not None
                if mode == "nft":
                    self.touched.extend(touched_sets(program))
            else:
                program = backend.render(rs, space.target.interfaces)
            programs[key] = program
            request: protocol.Request[Any] | None = None
            if mode != "ipt_whole" and space.program is not None:
                script = backend.patch_script(space.program, program)
                if script:
                    request = backend.patch_request(space.target, program, script, space.known)
            if request is None:
                request = backend.commit_request(space.target, program)
            requests.append(request)
        started = time.perf_counter()
        client = self.clients[mode]
        replies = await client.batch(requests)
        self.worker_own[mode].append(1000 * sum(getattr(r, "seconds", 0.0) for r in replies))
        again = []
        for key, reply in zip(rulesets, replies, strict=True):
            space, program = self.spaces[mode][key], programs[key]
            space.rs = rulesets[key]
            if isinstance(reply, protocol.Patched) and reply.applied and reply.sole:
                space.program = program
                space.known = backends.Known(reply.generation, space.known.token, reply.digest)
                self.patched[mode] += 1
            elif isinstance(reply, protocol.Committed):
                self.commit_done(space, program, reply)
            else:
                self.fallbacks[mode] += 1
                again.append((key, backend.commit_request(space.target, program)))
        if again:
            retries: list[protocol.Request[Any]] = [r for _, r in again]
            for (key, _), reply in zip(again, await client.batch(retries), strict=True):
                if isinstance(reply, protocol.DataplaneError):
                    raise reply
                self.commit_done(self.spaces[mode][key], programs[key], reply)
        return (time.perf_counter() - started) * 1000

    @staticmethod
    def commit_done(space: Namespace, program: backends.Program, reply: Any) -> None:
        if not isinstance(reply, protocol.Committed):
            raise RuntimeError(f"commit failed in {space.name}: {reply}")
        space.program = program
        space.known = backends.Known(reply.generation, reply.token, reply.digest)

    async def start(self) -> None:
        rulesets = {k: self.calc.desired(k).ruleset for k in self.local}
        for mode in self.modes:
            await self.program(mode, rulesets)

    async def flip(self, n: int, pods: list[int]) -> None:
        j = pods[(n // 2) % len(pods)]
        role = WINDOW[1] if n % 2 == 0 else WINDOW[1] - 1  # out of the window, then back
        obj = tte.remote_pod(j, role)
        started = time.perf_counter()
        change = store.Change()
        self.store.apply(watch.WatchEvent("pods", "MODIFIED", obj, time.monotonic()), change)
        for key in change.pods:
            self.calc.set_pod(key, self.store.pods.get(key))
        changed = self.calc.flush()
        rulesets = {k: d.ruleset for k, d in changed.items() if d is not None}
        calc_ms = (time.perf_counter() - started) * 1000
        self.calc_ms.append(calc_ms)
        self.changed.append(len(rulesets))
        k = n % len(self.modes)
        order = self.modes[k:] + self.modes[:k]  # rotate: no mode always follows the same one
        for mode in order:
            # The worker gives the memory of a big request back after answering it: let that
            # finish, so that each mode meets an idle worker, as a flip usually does.
            await self.clients[mode].call(protocol.Ping())
            started = time.perf_counter()
            kernel_ms = await self.program(mode, rulesets)
            self.kernel[mode].append(kernel_ms)
            total = (time.perf_counter() - started) * 1000
            self.times[mode].append(calc_ms + total)
            self.prep[mode].append(total - kernel_ms)

    async def mismatches(self) -> int:
        """Namespaces whose read-back fingerprint is not their last ruleset's, plus iptables
        incremental namespaces whose sets differ from the whole-apply namespace's."""
        bad = 0
        for mode in self.modes:
            backend = backends.get(BACKEND[mode])
            for space in self.spaces[mode].values():
                found = await self.clients[mode].call(backend.examine_request(space.target))
                assert space.program is not None
                bad += found.fingerprint != space.program.fingerprint
        for key in self.local:
            if "ipt_whole" in self.modes:
                whole = tables.ipset_elements(self.spaces["ipt_whole"][key].name)
                for mode in {"ipt", "ipt_render", "ipt_1t"} & set(self.modes):
                    bad += tables.ipset_elements(self.spaces[mode][key].name) != whole
            if "nft_render" in self.modes:
                rendered = nft_elements(self.spaces["nft_render"][key].name)
                for mode in {"nft", "nft_1t"} & set(self.modes):
                    bad += nft_elements(self.spaces[mode][key].name) != rendered
        return bad


def touched_sets(program: backends.Program) -> list[tuple[str, int]]:
    """The sets a derived nftables patch changes: the kernel's kind of each (`pipapo`: an
    interval set of concatenations, `rbtree`: an address interval set, `hash`) and its size."""
    if program.elements is None or not isinstance(program.payload, render_nft.Rendered):
        return []
    held = {s.name: s for t in program.payload.tables for s in t.sets}
    out = []
    for change in program.elements:
        named = held[change.name]
        concat = " . " in named.type
        interval = "interval" in named.flags
        kind = ("pipapo" if concat else "rbtree") if interval else "hash"
        out.append((kind, len(named.elements)))
    return out


def nft_elements(ns: str) -> dict[str, list[str]]:
    """The sets of `table inet podseg` in a namespace, elements sorted (JSON listing)."""
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-j", "list", "table", "inet", "podseg"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    sets: dict[str, list[str]] = {}
    for item in json.loads(out)["nftables"]:
        if "set" in item:
            elements = item["set"].get("elem", [])
            sets[item["set"]["name"]] = sorted(json.dumps(e, sort_keys=True) for e in elements)
    return sets


def touched_summary(touched: list[tuple[str, int]], patches: int) -> dict[str, dict[str, Any]]:
    """Per kernel set kind: how many a patch changes on average, and their sizes' median."""
    out: dict[str, dict[str, Any]] = {}
    for kind in sorted({k for k, _ in touched}):
        sizes = sorted(n for k, n in touched if k == kind)
        out[kind] = {"per_patch": len(sizes) / max(1, patches), "elements": sizes[len(sizes) // 2]}
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flips", type=int, default=60, help="label flips (>= 50 for p99)")
    parser.add_argument("--remote-pods", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="small sizes: a CI smoke test")
    parser.add_argument("--baseline", default=None, help="another checkout, alternating rounds")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per side (--baseline)")
    parser.add_argument(
        "--modes", default=",".join(COMPARED), help="the modes --baseline compares (comma list)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.flips, args.remote_pods, args.rounds = 6, 4000, 1
    args.modes = tuple(m for m in args.modes.split(",") if m)
    if not set(args.modes) <= set(MODES):
        parser.error(f"--modes: each of {', '.join(MODES)}")
    args.backend = "nftables+iptables"
    return args


async def child(args: argparse.Namespace) -> int:
    """One round of `--baseline`: the samples of `args.modes`, as one CHILD line."""
    bench, bad = await measure(args, args.modes)
    samples = {
        mode: {
            "total": bench.times[mode],
            "batch": bench.kernel[mode],
            "prep": bench.prep[mode],
            "own": bench.worker_own[mode][1:],  # the first: the initial commit
            "patched": bench.patched[mode],
            "fallbacks": bench.fallbacks[mode],
        }
        for mode in args.modes
    }
    print("CHILD " + json.dumps({"modes": samples, "calc": bench.calc_ms, "mismatches": bad}))
    return 0


def run_child(directory: str, args: argparse.Namespace) -> dict[str, Any]:
    """One round in a child process, with `directory`'s `agent` package."""
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(directory).resolve())}
    command = [sys.executable, __file__, "--child", "--flips", str(args.flips)]
    command += ["--remote-pods", str(args.remote_pods), "--modes", ",".join(args.modes)]
    # In `directory`: the worker starts as `python -m`, whose path begins with the cwd.
    out = subprocess.run(
        command, env=env, cwd=directory, capture_output=True, text=True, check=True
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("CHILD "))
    result: dict[str, Any] = json.loads(line[len("CHILD ") :])
    return result


def compare(args: argparse.Namespace) -> int:
    """`--baseline`: rounds of this checkout and the baseline's in alternating child
    processes (the order swapped every round), each side's medians and p99 over all its
    rounds, and the same-run ratios this / baseline."""
    sides = {"this": str(pathlib.Path(__file__).resolve().parents[2]), "baseline": args.baseline}
    rounds: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    load = os.getloadavg()[0]
    print(
        f"flip latency, this against {args.baseline}: {args.rounds} rounds of {args.flips} "
        f"flips per side, modes {', '.join(args.modes)}; load average {load:.2f}"
    )
    for r in range(args.rounds):
        order = list(sides.items()) if r % 2 == 0 else list(reversed(sides.items()))
        for side, directory in order:
            rounds[side].append(run_child(directory, args))
    print(f"  load average after: {os.getloadavg()[0]:.2f}")
    figures: dict[str, Any] = {side: {} for side in sides}
    bad = sum(one["mismatches"] for side in sides for one in rounds[side])
    for side in sides:
        calc = [t for one in rounds[side] for t in one["calc"]]
        figures[side]["calc"] = benchlib.summary(calc)
        print(f"  {side:8} calculation {ms(calc)}")
        for mode in args.modes:
            got = {
                part: [t for one in rounds[side] for t in one["modes"][mode][part]]
                for part in ("total", "batch", "prep", "own")
            }
            figures[side][mode] = {part: benchlib.summary(v) for part, v in got.items()}
            print(
                f"  {side:8} {mode:10s} event->committed {ms(got['total'])}\n"
                f"{'':21s}prep {ms(got['prep'])}; worker batch {ms(got['batch'])}; "
                f"worker's own time {ms(got['own'])}"
            )
    ratios = {
        mode: {
            part: figures["this"][mode][part]["median"]
            / max(1e-9, figures["baseline"][mode][part]["median"])
            for part in ("total", "batch", "prep", "own")
        }
        for mode in args.modes
    }
    for mode, r in ratios.items():
        print(
            f"  same run, this / baseline, {mode}: event->committed p50 {r['total']:.2f}, "
            f"worker batch p50 {r['batch']:.2f}, worker's own time p50 {r['own']:.2f}"
        )
    print(f"  mismatches {bad}")
    targets = [
        benchlib.target(
            f"flip-{mode}",
            f"p50 {f['total']['median']:.2f} ms, p99 {f['total']['p99']:.2f} ms",
            f["total"]["median"] <= P50_GOAL_MS and f["total"]["p99"] <= P99_GOAL_MS,
            f"{mode}: event -> 5 pods committed p50 <= {P50_GOAL_MS} ms, p99 <= {P99_GOAL_MS} ms",
        )
        for mode in args.modes
        if mode not in ONE_THREAD
        for f in (figures["this"][mode],)
    ]
    benchlib.result(
        "flip_latency", args, figures=figures, ratios=ratios, mismatches=bad, targets=targets
    )
    return 0 if bad == 0 else 1


def ms(values: list[float]) -> str:
    s = benchlib.summary(values)
    return f"p50 {s['median']:.2f} ms, p99 {s['p99']:.2f} ms (n={s['n']})"


async def measure(args: argparse.Namespace, modes: tuple[str, ...]) -> tuple[Bench, int]:
    """Set up `modes`' namespaces and workers, flip `args.flips` times, read every namespace
    back; the bench with its samples and the mismatches found."""
    started = time.perf_counter()
    st = cluster(args.remote_pods)
    pods = flippers(args.remote_pods)
    prefix = f"psg-{secrets.token_hex(3)}-fl"
    names = [f"{prefix}{m}{n}" for m in range(len(modes)) for n in range(LOCAL_PODS)]
    clients = {
        key: dp_client.WorkerClient(timeout=60, threads=1 if key[1] else None)
        for key in sorted({worker_of(mode) for mode in modes})
    }
    try:
        make_netns(names)
        bench = Bench(clients, st, prefix, modes)
        await bench.start()
        sizes = [len(bench.calc.desired(k).ruleset.ingress.port_peers) for k in bench.local]
        if not args.child:
            print(
                f"broad peers: {LOCAL_PODS} local pods, {args.remote_pods} remote pods; peer "
                f"elements per local pod {min(sizes)}..{max(sizes)}; set up in "
                f"{time.perf_counter() - started:.1f} s; {args.flips} flips"
            )
        for n in range(args.flips):
            await bench.flip(n, pods)
        bad = await bench.mismatches()
    finally:
        for client in clients.values():
            await client.close()
        delete_netns(names)
    return bench, bad


async def run(args: argparse.Namespace) -> int:
    bench, bad = await measure(args, MODES)
    print(f"  local pods changed per flip: {min(bench.changed)}..{max(bench.changed)}")
    touched = touched_summary(bench.touched, len(bench.calc_ms) * LOCAL_PODS)
    print(
        "  nft sets a derived patch changes, per pod and flip: "
        + (
            ", ".join(
                f"{k} {v['per_patch']:.1f} ({v['elements']} elements)" for k, v in touched.items()
            )
            or "none"
        )
    )
    print(f"  calculation (shared)       {ms(bench.calc_ms)}")
    for mode in MODES:
        print(
            f"  {mode:10s} event->committed {ms(bench.times[mode])}\n"
            f"             {'derive' if mode in DERIVED else 'render+diff'} "
            f"{ms(bench.prep[mode])}; worker batch {ms(bench.kernel[mode])}; "
            f"worker's own time {ms(bench.worker_own[mode])}\n"
            f"             derived {bench.derived[mode]}, patched {bench.patched[mode]}, "
            f"fallbacks {bench.fallbacks[mode]}"
        )
    s = {mode: benchlib.summary(bench.times[mode]) for mode in MODES}

    def over(a: str, b: str) -> float:
        return float(s[a]["median"] / max(1e-9, s[b]["median"]))

    ratio = over("ipt", "nft")
    ratios = {
        "ipt_over_nft": ratio,
        "nft_render_over_nft": over("nft_render", "nft"),
        "ipt_render_over_ipt": over("ipt_render", "ipt"),
        "ipt_whole_over_ipt": over("ipt_whole", "ipt"),
        "nft_over_nft_1t": over("nft", "nft_1t"),
        "ipt_over_ipt_1t": over("ipt", "ipt_1t"),
    }
    print(
        "  same run (p50): "
        + "; ".join(f"{k.replace('_over_', ' / ')} = {v:.1f}x" for k, v in ratios.items())
        + f"; mismatches {bad}"
    )
    targets = [
        benchlib.target(
            f"flip-{mode}",
            f"p50 {s[mode]['median']:.2f} ms, p99 {s[mode]['p99']:.2f} ms",
            s[mode]["median"] <= P50_GOAL_MS and s[mode]["p99"] <= P99_GOAL_MS,
            f"{mode}: event -> 5 pods committed p50 <= {P50_GOAL_MS} ms, p99 <= {P99_GOAL_MS} ms",
        )
        for mode in MODES
        if mode not in ONE_THREAD  # baselines, not targets
    ]
    targets.append(
        benchlib.target(
            "flip-ipt-over-nft",
            f"{ratio:.1f}x",
            ratio <= RATIO_GOAL,
            f"ipt (derived) p50 within {RATIO_GOAL:g}x of nft (derived)",
        )
    )
    benchlib.result(
        "flip_latency",
        args,
        modes={
            mode: {
                **s[mode],
                "kernel": benchlib.summary(bench.kernel[mode]),
                "prep": benchlib.summary(bench.prep[mode]),
                "derived": bench.derived[mode],
                "patched": bench.patched[mode],
                "fallbacks": bench.fallbacks[mode],
            }
            for mode in MODES
        },
        calc=benchlib.summary(bench.calc_ms),
        nft_sets_touched=touched,
        changed_per_flip=[min(bench.changed), max(bench.changed)],
        same_run_ratios=ratios,
        mismatches=bad,
        targets=targets,
    )
    return 0 if bad == 0 else 1


def main() -> int:
    args = parse_args()
    if args.child:
        return asyncio.run(child(args))
    if args.baseline:
        return compare(args)
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
