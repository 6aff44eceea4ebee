"""Benchmark: podseg side by side with kube-network-policies and kube-router on the real test
cluster (scripts/cluster.sh), one enforcer at a time, same cluster, same run.

Fixture (made once, kept for every enforcer):
* namespace psg-race: three agnhost pods on the node: `server` (netexec on 8080), `client`
  (labels flip=on, set100=yes, set10k=yes) and `outsider` (no such labels);
* namespace psg-race-fake: 10,000 pods bound to a Node object `psg-race-ghost` that no kubelet
  serves (tolerating every taint, so neither pod GC nor taint eviction removes them), with
  status.podIP set through the status subresource (every other address from 198.19.140.0, in
  the cluster CIDR)
  and phase Running: real pod objects the enforcers list and watch like any remote pod, without
  sandboxes. 99 carry set100=yes, 9,999 set10k=yes.

Per enforcer (podseg: `cluster.sh podseg install`; a peer: `cluster.sh peer start NAME`):
1. flips: policy race-flip isolates `server` (ingress from pods with flip=on, TCP 8080); the
   client's label flip is toggled on/off `--flips` times (both directions alike). Each flip's
   latency runs from just before the PATCH of the label (the API write) to the launch of the
   first probe that sees the new verdict. The prober runs inside the client pod's network
   namespace (nsenter) and launches a non-blocking TCP connect to server:8080 every 2 ms;
   a connect that completes is "allowed", one refused or unanswered within 250 ms "denied";
   the reported time is the earliest launch among probes with the new verdict (so the
   resolution is the 2 ms launch interval, the 250 ms only delays the report).
2. packets: policy race-peers on `server` allowing ingress (all ports) from
   namespaceSelector {} x podSelector set100=yes (100 peers: client + 99 fake pods) or
   set10k=yes (10,000 peers), or no policy at all (0 peers). Per configuration, after the
   outsider is denied (isolation in force) and the enforcer's CPU is quiet: sockperf TCP
   ping-pong (64-byte messages, half round trip, p50 and p99) and iperf3 (one stream), both from
   the client's netns to the server's, `--rounds` times.
3. enforcer: PSS of its whole process tree (smaps_rollup) at the end (10,000-peer policy in
   force) and CPU time (user + system of the tree, children included) over the flips and over
   the whole run of that enforcer.
Then the enforcer is removed (`podseg uninstall` / `peer stop`, which checks no peer rule,
chain, set or table is left) before the next starts.

Prints one table: medians, p99, and each peer's ratio to podseg in the same run, then
`RESULT {json}`. Needs root, the cluster up (bash scripts/cluster.sh up), sockperf, iperf3 and
the peers' binaries (bash scripts/cluster/build-peers.sh). About 10 minutes. Usage:
  .venv/bin/python scripts/bench/peer_race.py [--enforcers podseg,kube-network-policies,kube-router]
      [--flips 60] [--rounds 3] [--seconds 3] [--fake-pods 10000] [--keep-fixture]
`--quick` needs no cluster: it checks the prober (against a listener on 127.0.0.1 it opens and
closes: "denied" is then a refusal) and the table on synthetic figures.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import errno
import http.client
import json
import os
import pathlib
import selectors
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import benchlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "scripts" / "cluster.sh"
ENFORCERS = ("podseg", "kube-network-policies", "kube-router")
NS, FAKE_NS, GHOST = "psg-race", "psg-race-fake", "psg-race-ghost"
FAKE_BASE = (198 << 24) | (19 << 16) | (140 << 8)  # 198.19.140.0: fake pods' addresses
HTTP_PORT, SOCKPERF_PORT, IPERF_PORT = 8080, 11111, 5201
PROBE_INTERVAL, PROBE_TIMEOUT = 0.002, 0.25
FLIP_DEADLINE = 60.0


# -- the prober (runs inside the client pod's network namespace) --------------------------------


def probe_until(
    address: tuple[str, int], want: bool, deadline: float, started: float | None = None
) -> float | None:
    """Launch a TCP connect every PROBE_INTERVAL from now until one launched sees `want`
    (True: connected, False: refused or no answer within PROBE_TIMEOUT); then let every
    earlier probe finish and return the earliest launch time (time.monotonic) with `want`,
    or None at `deadline`."""
    sel = selectors.DefaultSelector()
    pending: dict[socket.socket, float] = {}
    found: float | None = None
    next_launch = started or time.monotonic()

    def done(sock: socket.socket, allowed: bool) -> None:
        nonlocal found
        launched = pending.pop(sock)
        sel.unregister(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
        if allowed == want and (found is None or launched < found):
            found = launched

    try:
        while True:
            now = time.monotonic()
            if found is None and now >= next_launch and now < deadline:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                err = s.connect_ex(address)
                pending[s] = now
                sel.register(s, selectors.EVENT_WRITE)
                if err not in (0, errno.EINPROGRESS):
                    done(s, False)
                next_launch = now + PROBE_INTERVAL
            for key, _ in sel.select(timeout=PROBE_INTERVAL / 2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                done(sock, sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
            now = time.monotonic()
            for sock, launched in list(pending.items()):
                if now - launched >= PROBE_TIMEOUT:
                    done(sock, False)
            if found is not None and not any(t < found for t in pending.values()):
                return found
            if found is None and now >= deadline and not pending:
                return None
    finally:
        for sock in list(pending):
            sel.unregister(sock)
            sock.close()
        sel.close()


def prober_main(host: str, port: int) -> int:
    """`--probe HOST PORT`: read `allow|deny` lines on stdin; answer each with `ready` once
    probing, then the earliest launch time seeing that verdict (or `none`)."""
    for line in sys.stdin:
        want = line.strip() == "allow"
        started = time.monotonic()
        print("ready", flush=True)
        found = probe_until((host, port), want, started + FLIP_DEADLINE, started)
        print("none" if found is None else repr(found), flush=True)
    return 0


class Prober:
    """The prober process in a pod's network namespace."""

    def __init__(self, netns_cmd: list[str], host: str, port: int) -> None:
        cmd = [*netns_cmd, sys.executable, str(pathlib.Path(__file__).resolve())]
        self.proc = subprocess.Popen(
            [*cmd, "--probe", host, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def ask(self, want: bool) -> None:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("allow\n" if want else "deny\n")
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the prober did not start")

    def answer(self) -> float | None:
        assert self.proc.stdout
        line = self.proc.stdout.readline().strip()
        return None if line in ("none", "") else float(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=FLIP_DEADLINE + 5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the cluster --------------------------------------------------------------------------------


def cluster_config() -> dict[str, str]:
    names = ("BIN", "KUBECONFIG_ADMIN", "MNTNS", "NODE", "AGNHOST_IMAGE", "PIDS", "LOGS")
    script = f". {ROOT / 'scripts/cluster/config.sh'}; printf '%s\\n' " + " ".join(
        f'"${n}"' for n in names
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return dict(zip(names, out.stdout.splitlines(), strict=True))


class Api:
    """Direct HTTPS to the API server with the admin kubeconfig's client certificate: the
    timed label writes and the bulk creation of the fake pods (kubectl per call costs ~100 ms)."""

    def __init__(self, kubeconfig: str) -> None:
        import yaml

        cfg = yaml.safe_load(pathlib.Path(kubeconfig).read_text())
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        url = cluster["server"].removeprefix("https://")
        self.host, port = url.rsplit(":", 1)
        self.port = int(port)
        self._dir = tempfile.TemporaryDirectory(prefix="psg-race-")
        d = pathlib.Path(self._dir.name)
        for key, name in (
            ("certificate-authority-data", "ca"),
            ("client-certificate-data", "crt"),
            ("client-key-data", "key"),
        ):
            src = cluster if name == "ca" else user
            (d / name).write_bytes(base64.b64decode(src[key]))
        self.ctx = ssl.create_default_context(cafile=str(d / "ca"))
        self.ctx.load_cert_chain(str(d / "crt"), str(d / "key"))
        self.local = threading.local()

    def _conn(self) -> http.client.HTTPSConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=60)
            self.local.conn = conn
        return conn

    def call(self, method: str, path: str, body: Any = None, ctype: str = "") -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": ctype or "application/json", "Accept": "application/json"}
        for attempt in range(3):
            conn = self._conn()
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
                continue
            if resp.status == 409 and method == "POST":
                return None  # already there (a kept fixture)
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status} {payload[:300]!r}")
            return json.loads(payload) if payload else None
        return None

    def label(self, ns: str, pod: str, key: str, value: str) -> None:
        self.call(
            "PATCH",
            f"/api/v1/namespaces/{ns}/pods/{pod}",
            {"metadata": {"labels": {key: value}}},
            "application/merge-patch+json",
        )


def kubectl(cfg: dict[str, str], *args: str, stdin: str | None = None, check: bool = True) -> str:
    done = subprocess.run(
        [f"{cfg['BIN']}/kubectl", "--kubeconfig", cfg["KUBECONFIG_ADMIN"], *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def cluster_sh(*args: str, timeout: float = 600) -> str:
    """scripts/cluster.sh ARGS; its output through a file, not a pipe (a daemon it starts
    keeps inherited descriptors open)."""
    with tempfile.TemporaryFile("w+") as out:
        done = subprocess.run(
            ["bash", str(CLUSTER), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
        out.seek(0)
        text = out.read()
    if done.returncode != 0:
        raise RuntimeError(f"cluster.sh {' '.join(args)}: {text[-1500:]}")
    return text


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def agnhost_pod(cfg: dict[str, str], name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "agnhost",
                    "image": cfg["AGNHOST_IMAGE"],
                    "imagePullPolicy": "Never",
                    "args": ["netexec", f"--http-port={HTTP_PORT}", "--udp-port=-1"],
                }
            ],
        },
    }


def fake_pod(cfg: dict[str, str], i: int) -> dict[str, Any]:
    labels = {"app": "ghost", "set10k": "yes" if i < 9_999 else "no"}
    if i < 99:
        labels["set100"] = "yes"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"ghost-{i}", "namespace": FAKE_NS, "labels": labels},
        "spec": {
            "nodeName": GHOST,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "c", "image": cfg["AGNHOST_IMAGE"]}],
        },
    }


def ip_of(i: int) -> str:
    """Every other address: no two fake pods adjacent, so an enforcer that merges adjacent
    addresses into ranges (podseg's interval sets) holds one element per peer, as kube-router's
    ipset does."""
    n = FAKE_BASE + 2 * i
    return f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def make_fixture(cfg: dict[str, str], api: Api, fake_pods: int) -> dict[str, str]:
    """The three real pods and the fake ones; {name: pod IP} of the real ones."""
    t0 = time.monotonic()

    def gone() -> bool:  # a namespace of an earlier run still terminating
        out = kubectl(cfg, "get", "namespaces", "-o", "name", check=False)
        return f"namespace/{NS}\n" not in out and f"namespace/{FAKE_NS}\n" not in out

    if not gone():
        delete_fixture(cfg)
        wait_until(gone, 300, "the namespaces of an earlier run deleted", interval=2)
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": FAKE_NS}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": GHOST}},
        agnhost_pod(cfg, "server", {"app": "server"}),
        agnhost_pod(
            cfg, "client", {"app": "client", "flip": "on", "set100": "yes", "set10k": "yes"}
        ),
        agnhost_pod(cfg, "outsider", {"app": "outsider"}),
    ]
    kubectl(
        cfg,
        "apply",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}),
    )

    def one(i: int) -> None:
        api.call("POST", f"/api/v1/namespaces/{FAKE_NS}/pods", fake_pod(cfg, i))
        status = {
            "status": {
                "phase": "Running",
                "podIP": ip_of(i),
                "podIPs": [{"ip": ip_of(i)}],
                "hostIP": "198.19.0.250",
                # not Ready already: the node controller, finding the ghost node unreachable,
                # would otherwise rewrite every one of them (10,000 pod updates) mid-run
                "conditions": [{"type": "Ready", "status": "False"}],
            }
        }
        api.call(
            "PATCH",
            f"/api/v1/namespaces/{FAKE_NS}/pods/ghost-{i}/status",
            status,
            "application/merge-patch+json",
        )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(fake_pods)))
    print(f"fixture: {fake_pods} fake pods created in {time.monotonic() - t0:.0f} s", flush=True)

    def ready() -> dict[str, str] | None:
        pods = json.loads(kubectl(cfg, "-n", NS, "get", "pods", "-o", "json"))["items"]
        ips = {
            p["metadata"]["name"]: p["status"].get("podIP", "")
            for p in pods
            if any(
                c.get("state", {}).get("running") for c in p["status"].get("containerStatuses", [])
            )
        }
        return ips if len(ips) == 3 and all(ips.values()) else None

    ips: dict[str, str] = wait_until(ready, 180, "the race pods running")
    return ips


def delete_fixture(cfg: dict[str, str]) -> None:
    kubectl(cfg, "delete", "namespace", NS, FAKE_NS, "--ignore-not-found", "--wait=false")
    kubectl(cfg, "delete", "node", GHOST, "--ignore-not-found")


def pod_netns(cfg: dict[str, str], ip: str) -> str:
    """/run/netns/NAME (in the node's mount namespace) holding `ip`."""
    script = (
        'for f in /run/netns/*; do ip -n "${f##*/}" -o -4 addr | grep -q " $0/" && echo "$f";'
        " done; true"
    )
    out = subprocess.run(
        ["nsenter", f"--mount={cfg['MNTNS']}", "--", "sh", "-c", script, ip],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if len(out) != 1:
        raise RuntimeError(f"no single pod network namespace holds {ip}: {out}")
    return out[0]


def in_pod(cfg: dict[str, str], netns: str) -> list[str]:
    return ["nsenter", f"--mount={cfg['MNTNS']}", "--", "nsenter", f"--net={netns}", "--"]


def connects(cfg: dict[str, str], netns: str, ip: str, port: int) -> bool:
    code = f"import socket; socket.create_connection(('{ip}', {port}), timeout=0.5).close()"
    return (
        subprocess.run(
            [*in_pod(cfg, netns), sys.executable, "-c", code], capture_output=True, check=False
        ).returncode
        == 0
    )


# -- enforcers: start, stop, process tree -----------------------------------------------------


def enforcer_root(cfg: dict[str, str], name: str) -> int:
    if name != "podseg":
        return int(cluster_sh("peer", "pid").split()[-1])
    found = []
    for d in pathlib.Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            cgroup = (d / "cgroup").read_text()
        except OSError:
            continue
        if b"agent" in cmd and b"--netns-dir=/var/run/netns" in cmd and "psg-k8s-node1" in cgroup:
            found.append(int(d.name))
    roots = [p for p in found if parent(p) not in found]
    if len(roots) != 1:
        raise RuntimeError(f"podseg agent process not found uniquely: {found}")
    return roots[0]


def parent(pid: int) -> int:
    try:
        return int(pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in pathlib.Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in task.read_text().split())
    return out


def pss_mib(pid: int) -> float:
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            for line in pathlib.Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total / 1024


def cpu_s(pid: int) -> float:
    """user + system time of the tree, reaped children included."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            f = pathlib.Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in f[11:15])
    return total / tick


def quiet(pid: int, timeout: float = 30) -> None:
    """Until the enforcer used < 2% of a core for 2 s (or timeout)."""
    deadline = time.monotonic() + timeout
    last = cpu_s(pid)
    while time.monotonic() < deadline:
        time.sleep(2)
        now = cpu_s(pid)
        if now - last < 0.04:
            return
        last = now


def start(name: str) -> None:
    if name == "podseg":
        cluster_sh("podseg", "install", timeout=900)
    else:
        cluster_sh("peer", "start", name)


def stop(name: str) -> None:
    if name == "podseg":
        cluster_sh("podseg", "uninstall", timeout=600)
    else:
        cluster_sh("peer", "stop")


# -- one enforcer's run ------------------------------------------------------------------------


def flip_policy() -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "race-flip", "namespace": NS},
        "spec": {
            "podSelector": {"matchLabels": {"app": "server"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"flip": "on"}}}],
                    "ports": [{"protocol": "TCP", "port": HTTP_PORT}],
                }
            ],
        },
    }


def peers_policy(key: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "race-peers", "namespace": NS},
        "spec": {
            "podSelector": {"matchLabels": {"app": "server"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {key: "yes"}}}]}
            ],
        },
    }


def sockperf(cfg: dict[str, str], client: str, ip: str, seconds: float) -> tuple[float, float]:
    return benchlib.sockperf_ping_pong(in_pod(cfg, client), ip, SOCKPERF_PORT, seconds)


def iperf(cfg: dict[str, str], client: str, ip: str, seconds: float) -> float:
    return benchlib.iperf_gbps(in_pod(cfg, client), ip, IPERF_PORT, seconds)


@contextlib.contextmanager
def servers(cfg: dict[str, str], server: str, ip: str) -> Iterator[None]:
    procs = [
        subprocess.Popen(
            [
                *in_pod(cfg, server),
                "sockperf",
                "server",
                "--tcp",
                "-i",
                ip,
                "-p",
                str(SOCKPERF_PORT),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [*in_pod(cfg, server), "iperf3", "-s", "-B", ip, "-p", str(IPERF_PORT)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        time.sleep(1)
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def run_enforcer(
    name: str, args: argparse.Namespace, cfg: dict[str, str], api: Api, ips: dict[str, str]
) -> dict[str, Any]:
    print(f"== {name}", flush=True)
    t_start = time.monotonic()
    try:
        start(name)
    except RuntimeError as e:
        print(f"  could not start: {e}", flush=True)
        with contextlib.suppress(RuntimeError):
            stop(name)
        return {"error": str(e).strip().splitlines()[-1]}
    try:
        return measure(name, args, cfg, api, ips, t_start)
    except (RuntimeError, subprocess.SubprocessError, ValueError) as e:
        print(f"  failed: {e}", flush=True)
        return {"error": str(e).strip().splitlines()[-1]}
    finally:
        with contextlib.suppress(RuntimeError):
            kubectl(cfg, "-n", NS, "delete", "networkpolicy", "--all")
        stop(name)


def measure(
    name: str,
    args: argparse.Namespace,
    cfg: dict[str, str],
    api: Api,
    ips: dict[str, str],
    t_start: float,
) -> dict[str, Any]:
    pid = enforcer_root(cfg, name)
    cpu0 = cpu_s(pid)
    started_s = time.monotonic() - t_start
    netns = {n: pod_netns(cfg, ip) for n, ip in ips.items()}
    server = ips["server"]
    api.label(NS, "client", "flip", "on")
    kubectl(cfg, "apply", "-f", "-", stdin=json.dumps(flip_policy()))
    wait_until(
        lambda: (
            not connects(cfg, netns["outsider"], server, HTTP_PORT)
            and connects(cfg, netns["client"], server, HTTP_PORT)
        ),
        120,
        f"{name}: race-flip in force (outsider denied, client allowed)",
    )
    quiet(pid)

    # 1. flips
    prober = Prober(in_pod(cfg, netns["client"]), server, HTTP_PORT)
    flips: dict[str, list[float]] = {"allow_to_deny": [], "deny_to_allow": []}
    lost = 0
    cpu_f0 = cpu_s(pid)
    allowed = True
    try:
        for _ in range(args.flips):
            want = not allowed
            prober.ask(want)
            t0 = time.monotonic()
            api.label(NS, "client", "flip", "on" if want else "off")
            seen = prober.answer()
            if seen is None:
                lost += 1
            else:
                flips["deny_to_allow" if want else "allow_to_deny"].append((seen - t0) * 1000)
            allowed = want
            time.sleep(0.2)
    finally:
        prober.close()
    cpu_flips = cpu_s(pid) - cpu_f0
    all_flips = flips["allow_to_deny"] + flips["deny_to_allow"]
    print(
        f"  flips: {len(all_flips)} seen, {lost} not within {FLIP_DEADLINE:.0f} s; "
        f"p50 {benchlib.pct(all_flips, 0.5):.1f} ms p99 {benchlib.pct(all_flips, 0.99):.1f} ms",
        flush=True,
    )
    kubectl(cfg, "-n", NS, "delete", "networkpolicy", "race-flip")
    api.label(NS, "client", "flip", "on")

    # 2. packets
    packets: dict[str, dict[str, list[float]]] = {}
    with servers(cfg, netns["server"], server):
        for peers, key in ((0, ""), (100, "set100"), (10_000, "set10k")):
            if key:
                kubectl(cfg, "apply", "-f", "-", stdin=json.dumps(peers_policy(key)))
                wait_until(
                    lambda: (
                        not connects(cfg, netns["outsider"], server, HTTP_PORT)
                        and connects(cfg, netns["client"], server, HTTP_PORT)
                    ),
                    180,
                    f"{name}: race-peers ({peers}) in force",
                )
            else:
                kubectl(cfg, "-n", NS, "delete", "networkpolicy", "--all")
                wait_until(
                    lambda: connects(cfg, netns["outsider"], server, HTTP_PORT),
                    120,
                    f"{name}: no policy (outsider allowed)",
                )
            quiet(pid)
            got: dict[str, list[float]] = {"lat_p50_us": [], "lat_p99_us": [], "gbps": []}
            for _ in range(args.rounds):
                p50, p99 = sockperf(cfg, netns["client"], server, args.seconds)
                got["lat_p50_us"].append(p50)
                got["lat_p99_us"].append(p99)
                got["gbps"].append(iperf(cfg, netns["client"], server, args.seconds))
            packets[str(peers)] = got
            print(
                f"  {peers} peers: latency p50 {statistics.median(got['lat_p50_us']):.1f} us "
                f"p99 {statistics.median(got['lat_p99_us']):.1f} us, "
                f"{statistics.median(got['gbps']):.2f} Gbit/s",
                flush=True,
            )
    pss = pss_mib(pid)
    cpu_total = cpu_s(pid) - cpu0
    out = {
        "start_s": round(started_s, 1),
        "flips_ms": {k: benchlib.summary(v) for k, v in flips.items()},
        "flip_ms": benchlib.summary(all_flips),
        "flips_lost": lost,
        "packets": {
            k: {m: statistics.median(v) for m, v in got.items()} for k, got in packets.items()
        },
        "pss_mib": round(pss, 1),
        "cpu_flips_s": round(cpu_flips, 2),
        "cpu_total_s": round(cpu_total, 2),
        "run_s": round(time.monotonic() - t_start, 1),
    }
    print(
        f"  PSS {pss:.1f} MiB, CPU {cpu_flips:.2f} s over flips, {cpu_total:.2f} s total",
        flush=True,
    )
    return out


# -- the table ----------------------------------------------------------------------------------


def _p50(peers: str) -> Callable[[dict[str, Any]], float]:
    return lambda r: float(r["packets"][peers]["lat_p50_us"])


def _p99(peers: str) -> Callable[[dict[str, Any]], float]:
    return lambda r: float(r["packets"][peers]["lat_p99_us"])


def _gbps(peers: str) -> Callable[[dict[str, Any]], float]:
    return lambda r: float(r["packets"][peers]["gbps"])


ROWS: list[tuple[str, Callable[[dict[str, Any]], float], str]] = [
    ("flip p50 (ms)", lambda r: r["flip_ms"]["median"], "{:.1f}"),
    ("flip p99 (ms)", lambda r: r["flip_ms"]["p99"], "{:.1f}"),
    ("allow->deny p50 (ms)", lambda r: r["flips_ms"]["allow_to_deny"]["median"], "{:.1f}"),
    ("deny->allow p50 (ms)", lambda r: r["flips_ms"]["deny_to_allow"]["median"], "{:.1f}"),
    *(
        row
        for peers in ("0", "100", "10000")
        for row in (
            (f"TCP latency p50, {peers} peers (us)", _p50(peers), "{:.1f}"),
            (f"TCP latency p99, {peers} peers (us)", _p99(peers), "{:.1f}"),
            (f"throughput, {peers} peers (Gbit/s)", _gbps(peers), "{:.2f}"),
        )
    ),
    ("PSS of the process tree (MiB)", lambda r: r["pss_mib"], "{:.1f}"),
    ("CPU over the flips (s)", lambda r: r["cpu_flips_s"], "{:.2f}"),
    ("CPU over its whole run (s)", lambda r: r["cpu_total_s"], "{:.2f}"),
]


def table(results: dict[str, dict[str, Any]]) -> tuple[str, dict[str, dict[str, float]]]:
    """A markdown table, one column per enforcer, peers with `(x podseg)`; the ratios."""
    names = list(results)
    lines = [
        "| measure | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    ratios: dict[str, dict[str, float]] = {
        n: {} for n in names if n != "podseg" and "error" not in results[n]
    }
    for label, get, fmt in ROWS:
        cells = []
        ok = "podseg" in results and "error" not in results["podseg"]
        base = get(results["podseg"]) if ok else float("nan")
        for n in names:
            if "error" in results[n]:
                cells.append("not run")
                continue
            value = get(results[n])
            cell = fmt.format(value)
            if n != "podseg" and base and base == base:
                ratio = value / base
                ratios[n][label] = round(ratio, 2)
                cell += f" ({ratio:.2f}x)"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines), ratios


# -- main ----------------------------------------------------------------------------------------


def quick(args: argparse.Namespace) -> int:
    """No cluster: the prober against a listener of its own on 127.0.0.1 (open: allowed; closed:
    refused), and the table on synthetic figures."""
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(512)
    port = lsock.getsockname()[1]
    now = time.monotonic()
    seen_allow = probe_until(("127.0.0.1", port), True, now + 5)
    closer = threading.Timer(0.05, lsock.close)
    t0 = time.monotonic()
    closer.start()
    seen_deny = probe_until(("127.0.0.1", port), False, t0 + 5)
    closer.join()
    if seen_allow is None or seen_deny is None:
        raise SystemExit("the prober saw no verdict")
    deny_ms = (seen_deny - t0) * 1000
    print(f"prober self-check: allowed at once, denied {deny_ms:.1f} ms after a 50 ms close")
    results = {}
    for i, n in enumerate(ENFORCERS):
        flips = [10.0 * (i + 1) + j for j in range(10)]
        results[n] = {
            "flip_ms": benchlib.summary(flips),
            "flips_ms": {
                "allow_to_deny": benchlib.summary(flips),
                "deny_to_allow": benchlib.summary(flips),
            },
            "packets": {
                p: {"lat_p50_us": 20.0 + i, "lat_p99_us": 40.0 + i, "gbps": 10.0 - i}
                for p in ("0", "100", "10000")
            },
            "pss_mib": 100.0 * (i + 1),
            "cpu_flips_s": 1.0 + i,
            "cpu_total_s": 5.0 + i,
        }
    text, ratios = table(results)
    print(text)
    benchlib.result(
        "peer_race",
        args,
        probe_deny_ms=round(deny_ms, 1),
        enforcers=results,
        ratios=ratios,
        targets=[],
    )
    return 0


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--probe":
        return prober_main(sys.argv[2], int(sys.argv[3]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    benchlib.common_args(parser)
    parser.add_argument("--enforcers", default=",".join(ENFORCERS))
    parser.add_argument("--flips", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--fake-pods", type=int, default=10_000)
    parser.add_argument("--keep-fixture", action="store_true", help="do not delete it at the end")
    args = parser.parse_args()
    if args.quick:
        return quick(args)
    names = args.enforcers.split(",")
    if not set(names) <= set(ENFORCERS):
        parser.error(f"--enforcers: a comma-separated subset of {','.join(ENFORCERS)}")
    if os.geteuid() != 0:
        raise SystemExit("needs root (nsenter into the node and its pods)")
    cfg = cluster_config()
    api = Api(cfg["KUBECONFIG_ADMIN"])
    kubectl(cfg, "get", "--raw", "/readyz")
    load0 = os.getloadavg()
    t0 = time.monotonic()
    ips = make_fixture(cfg, api, args.fake_pods)
    results: dict[str, dict[str, Any]] = {}
    try:
        for name in names:
            results[name] = run_enforcer(name, args, cfg, api, ips)
    finally:
        if not args.keep_fixture:
            delete_fixture(cfg)
    load1 = os.getloadavg()
    text, ratios = table(results)
    print()
    print(text)
    for n, r in results.items():
        if "error" in r:
            print(f"{n}: not run: {r['error']}")
    print(
        f"\n{args.flips} flips, {args.rounds} rounds of {args.seconds:.0f} s per peer count, "
        f"{args.fake_pods} fake pods; {time.monotonic() - t0:.0f} s; load average "
        f"{load0[0]:.2f} at start, {load1[0]:.2f} at end"
    )
    benchlib.result(
        "peer_race",
        args,
        enforcers=results,
        ratios=ratios,
        load_average={"start": load0, "end": load1},
        fake_pods=args.fake_pods,
        targets=[],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
