"""A fake Kubernetes node made of network namespaces: what the demo and end-to-end tests build.

Each sandbox node is a namespace `psg-<run>-<node>` holding a bridge `psg0` that acts as the
pod network's gateway; nodes are routed to each other over veth links between their namespaces
(full mesh). Each pod is a namespace `psg-<run>-<namespace>-<name>` whose `eth0` is a veth into
its node's bridge, running `testbed.sandbox.podproc` (servers plus prober).

Pods hold their addresses as /32 and /128 and send everything, even to pods on the same bridge,
to the node's gateway address, which routes it (Calico style). The reason is the kernel's
neighbour tables, which all namespaces share under the root namespace's gc_thresh3 (1024 by
default): with on-link pod subnets every pod would learn a neighbour entry per peer, and a
100-pod matrix overflows the table and drops packets. Routed, each pod needs one entry per
family and its node one per pod.

Nothing of a sandbox has a link into, or changes anything in, the root namespace. `close()`
(also run by the context manager and, as a last resort, at garbage collection or interpreter
exit) kills the pod processes and deletes every namespace of the run, including any left over
under the run's prefix. Addresses: see `testbed.sandbox.addressing`.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import itertools
import os
import pathlib
import re
import secrets
import shutil
import string
import tempfile
import time
import types
import weakref
from collections.abc import Iterable, Sequence

from testbed.sandbox import addressing, iproute, podclient

BRIDGE = "psg0"
POD_INTERFACE = "eth0"
DEFAULT_PORTS = (80, 81)
MAX_NETNS_NAME = 64
_RUN_ID_RE = re.compile(r"^[a-z0-9]{1,16}$")
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
# Set inside the node or pod namespace only (before its interfaces exist, so they inherit the
# `default` values): forwarding on nodes; no IPv6 duplicate address detection, so addresses work
# at once; no ICMP redirects, so pods keep sending everything to their gateway (see above).
_NODE_SYSCTLS = (
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv6.conf.all.forwarding", "1"),
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
    ("net.ipv4.conf.all.send_redirects", "0"),
    ("net.ipv4.conf.default.send_redirects", "0"),
)
_POD_SYSCTLS = (
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
    ("net.ipv4.conf.all.accept_redirects", "0"),
    ("net.ipv4.conf.default.accept_redirects", "0"),
    ("net.ipv6.conf.all.accept_redirects", "0"),
    ("net.ipv6.conf.default.accept_redirects", "0"),
)


LOCK_PATH = pathlib.Path(tempfile.gettempdir()) / "podseg-sandbox.lock"
LOCK_TIMEOUT = 900.0


def bridge_mac(node_index: int) -> str:
    """The fixed, locally administered MAC address of node `node_index`'s bridge."""
    return f"02:70:73:67:00:{node_index & 0xFF:02x}"


class _MachineLock:
    """One sandbox at a time on this machine, across processes.

    Every sandbox uses the same address plan, so two at once would put one pod address in two
    namespaces and make them ambiguous. Re-entrant within a process (a test may hold two
    sandboxes in turn or at once); released by the kernel if the holder dies.
    """

    _fd: int | None = None
    _holders = 0

    @classmethod
    def acquire(cls) -> None:
        if cls._holders == 0:
            fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600)
            deadline = time.monotonic() + LOCK_TIMEOUT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        os.close(fd)
                        raise SandboxError(f"another sandbox held {LOCK_PATH} too long") from None
                    time.sleep(0.1)
            cls._fd = fd
        cls._holders += 1

    @classmethod
    def release(cls) -> None:
        if cls._holders == 0:
            return
        cls._holders -= 1
        if cls._holders == 0 and cls._fd is not None:
            os.close(cls._fd)  # closing the descriptor drops the lock
            cls._fd = None


class SandboxError(RuntimeError):
    """Building or changing the sandbox failed."""


@dataclasses.dataclass(frozen=True)
class SandboxNode:
    """A node namespace: bridge `psg0` with the gateway addresses of its pods."""

    name: str
    netns: str
    index: int
    ipv4: str
    ipv6: str
    pod_cidr_v4: str
    pod_cidr_v6: str
    bridge: str = BRIDGE

    @property
    def netns_path(self) -> str:
        """The namespace's bind-mount, e.g. for `nsenter --net=...`."""
        return f"{iproute.NETNS_DIR}/{self.netns}"


@dataclasses.dataclass
class SandboxPod:
    """A pod namespace with its addresses and its running pod process."""

    namespace: str
    name: str
    node: str
    netns: str
    netns_path: str
    ipv4: str
    ipv6: str | None
    interface: str = POD_INTERFACE
    host_interface: str = ""
    ports: tuple[int, ...] = DEFAULT_PORTS
    echo_ports: tuple[int, ...] = ()
    process: podclient.PodProcess | None = dataclasses.field(
        default=None, repr=False, compare=False
    )

    @property
    def key(self) -> str:
        """`namespace/name`, the key used in probe matrices."""
        return f"{self.namespace}/{self.name}"

    @property
    def pid(self) -> int | None:
        """The pod process's pid (inside the pod namespace), or None once stopped."""
        return self.process.pid if self.process is not None else None

    def address(self, family: int) -> str | None:
        """The pod's address of IP family 4 or 6 (None if it has none)."""
        if family == 4:
            return self.ipv4
        if family == 6:
            return self.ipv6
        raise ValueError(f"family must be 4 or 6, not {family}")


@dataclasses.dataclass
class _Resources:
    """What a sandbox must undo; kept apart from the Sandbox so a finalizer can reach it."""

    prefix: str
    workdir: pathlib.Path
    netns: list[str] = dataclasses.field(default_factory=list)
    processes: list[podclient.PodProcess] = dataclasses.field(default_factory=list)

    def release(self) -> None:
        """Kill every process, delete every namespace of the run, remove the work directory."""
        try:
            self._release()
        finally:
            _MachineLock.release()

    def _release(self) -> None:
        for process in self.processes:
            process.signal_stop()
        deadline = time.monotonic() + 5.0
        for process in self.processes:
            process.wait_stopped(deadline)
        self.processes.clear()
        leftovers = [name for name in iproute.list_netns() if name.startswith(self.prefix)]
        names = list(dict.fromkeys([*reversed(self.netns), *leftovers]))
        existing = set(iproute.list_netns())
        iproute.run_batch([f"netns del {name}" for name in names if name in existing], force=True)
        self.netns.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)
        remaining = [name for name in iproute.list_netns() if name.startswith(self.prefix)]
        if remaining:
            raise SandboxError(f"namespaces left behind: {remaining}")


def _random_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(6))


def _check_name(kind: str, value: str) -> None:
    if len(value) > 253 or not _NAME_RE.match(value):
        raise ValueError(f"invalid {kind} {value!r}: want a lowercase DNS-1123 name")


class Sandbox:
    """A run's nodes and pods; a context manager that removes everything on exit."""

    def __init__(self, run_id: str | None = None, *, ports: Sequence[int] = DEFAULT_PORTS) -> None:
        self.run_id = run_id if run_id is not None else _random_run_id()
        if not _RUN_ID_RE.match(self.run_id):
            raise ValueError(f"run id {self.run_id!r}: want 1-16 lowercase letters or digits")
        self.prefix = f"psg-{self.run_id}-"
        self.default_ports = tuple(ports)
        _MachineLock.acquire()
        workdir = pathlib.Path(tempfile.mkdtemp(prefix=self.prefix))
        self._resources = _Resources(prefix=self.prefix, workdir=workdir)
        self._finalizer = weakref.finalize(self, self._resources.release)
        self._nodes: dict[str, SandboxNode] = {}
        self._pods: dict[str, SandboxPod] = {}
        self._pod_ordinals: dict[str, itertools.count[int]] = {}
        self._veth_numbers = itertools.count(1)
        self._used_netns: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Kill the pod processes and delete every namespace of this run (idempotent)."""
        self._finalizer()
        self._pods.clear()

    @property
    def closed(self) -> bool:
        """Whether close() has run."""
        return not self._finalizer.alive

    @property
    def workdir(self) -> pathlib.Path:
        """A scratch directory removed by close() (pod process logs live here)."""
        return self._resources.workdir

    @property
    def netns_dir(self) -> pathlib.Path:
        """A directory linking this sandbox's namespaces only: agents under test search it
        (and not /proc), so two sandboxes on one machine never see each other's pods."""
        return self.workdir / "netns"

    def _link_netns(self, names: Iterable[str]) -> None:
        self.netns_dir.mkdir(exist_ok=True)
        for name in names:
            link = self.netns_dir / name
            if not link.is_symlink():
                link.symlink_to(f"/run/netns/{name}")

    # -- queries ---------------------------------------------------------------------------

    @property
    def nodes(self) -> list[SandboxNode]:
        """The nodes, in order of creation."""
        return list(self._nodes.values())

    @property
    def pods(self) -> list[SandboxPod]:
        """The live pods, in order of creation."""
        return list(self._pods.values())

    def node(self, name: str) -> SandboxNode:
        """The node called `name`."""
        return self._nodes[name]

    def pod(self, key: str) -> SandboxPod:
        """The pod with key `namespace/name`."""
        return self._pods[key]

    # -- building --------------------------------------------------------------------------

    def add_node(self, name: str) -> SandboxNode:
        """Create a node namespace with its bridge, routed to every existing node."""
        self._check_open()
        _check_name("node name", name)
        if name in self._nodes:
            raise ValueError(f"node {name!r} exists")
        index = len(self._nodes) + 1
        if index > addressing.MAX_NODES:
            raise SandboxError(f"at most {addressing.MAX_NODES} nodes")
        plan = addressing.node_plan(index)
        netns = self._claim_netns(name)
        node = SandboxNode(
            name=name,
            netns=netns,
            index=index,
            ipv4=str(plan.bridge_v4.ip),
            ipv6=str(plan.bridge_v6.ip),
            pod_cidr_v4=str(plan.pod_network_v4),
            pod_cidr_v6=str(plan.pod_network_v6),
        )
        lines = _node_lines(self.workdir, netns, plan)
        for other in self._nodes.values():
            lines.extend(_link_lines(self.workdir, other, node))
        self._resources.netns.append(netns)
        self._run(lines)
        self._link_netns([netns])
        self._nodes[name] = node
        self._pod_ordinals[name] = itertools.count()
        return node

    def add_pod(
        self,
        node: SandboxNode,
        namespace: str,
        name: str,
        *,
        ipv6: bool = True,
        ports: Sequence[int] | None = None,
        echo_ports: Sequence[int] = (),
    ) -> SandboxPod:
        """Create a pod on `node` and return once its servers listen."""
        (pod,) = self.add_pods(
            node, [(namespace, name)], ipv6=ipv6, ports=ports, echo_ports=echo_ports
        )
        return pod

    def add_pods(
        self,
        node: SandboxNode,
        pods: Iterable[tuple[str, str]],
        *,
        ipv6: bool = True,
        ports: Sequence[int] | None = None,
        echo_ports: Sequence[int] = (),
    ) -> list[SandboxPod]:
        """Create several pods on `node` at once (one `ip` batch, processes started together)."""
        self._check_open()
        self._check_node(node)
        wanted = list(pods)
        self._check_new_pods(wanted)
        pod_ports = tuple(ports) if ports is not None else self.default_ports
        created = [
            self._new_pod(node, namespace, name, ipv6=ipv6, ports=pod_ports, echo_ports=echo_ports)
            for namespace, name in wanted
        ]
        lines = _pod_lines(self.workdir, node, created)
        self._resources.netns.extend(pod.netns for pod in created)
        self._run(lines)
        self._link_netns(pod.netns for pod in created)
        for pod in created:
            self._pods[pod.key] = pod
        self._start_processes(created)
        return created

    def _check_new_pods(self, wanted: Sequence[tuple[str, str]]) -> None:
        """Valid names, none twice, none of a live pod."""
        for namespace, name in wanted:
            _check_name("namespace", namespace)
            _check_name("pod name", name)
        keys = [f"{namespace}/{name}" for namespace, name in wanted]
        duplicates = {key for key in keys if keys.count(key) > 1 or key in self._pods}
        if duplicates:
            raise ValueError(f"pods exist already: {sorted(duplicates)}")

    def _new_pod(
        self,
        node: SandboxNode,
        namespace: str,
        name: str,
        *,
        ipv6: bool,
        ports: tuple[int, ...],
        echo_ports: Sequence[int],
    ) -> SandboxPod:
        """The next pod of `node`: its addresses, namespace name and veth, nothing created."""
        plan = addressing.node_plan(node.index)
        v4, v6 = addressing.pod_addresses(plan, next(self._pod_ordinals[node.name]))
        netns = self._claim_netns(f"{namespace}-{name}")
        return SandboxPod(
            namespace=namespace,
            name=name,
            node=node.name,
            netns=netns,
            netns_path=f"{iproute.NETNS_DIR}/{netns}",
            ipv4=str(v4),
            ipv6=str(v6) if ipv6 else None,
            host_interface=f"vp{next(self._veth_numbers)}",
            ports=ports,
            echo_ports=tuple(echo_ports),
        )

    def _start_processes(self, pods: Sequence[SandboxPod]) -> None:
        for pod in pods:
            log_path = self.workdir / f"{pod.netns}.log"
            process = podclient.PodProcess.start(
                pod.netns, pod.key, pod.ports, log_path, pod.echo_ports
            )
            self._resources.processes.append(process)
            pod.process = process
        deadline = time.monotonic() + podclient.READY_TIMEOUT
        for pod in pods:
            assert pod.process is not None
            try:
                pod.process.wait_ready(deadline)
            except podclient.PodProcessError as exc:
                raise SandboxError(f"pod {pod.key} did not start: {exc}") from exc

    def serve_on_node(
        self,
        node: SandboxNode,
        ports: Sequence[int],
        *,
        addresses: Sequence[str] = (),
        echo_ports: Sequence[int] = (),
    ) -> podclient.PodProcess:
        """Run probe servers inside the node namespace (its "host" services: kubelet, SSH...).

        `addresses` (single IPv4/IPv6 addresses, e.g. the cloud metadata 169.254.169.254) are
        added to the node namespace's `lo` first, so pods, which route everything to their
        node, reach them there. The process stops with the sandbox.
        """
        self._check_open()
        self._check_node(node)
        lines = []
        for address in addresses:
            bits = 128 if ":" in address else 32
            lines.append(f"netns exec {node.netns} ip addr replace {address}/{bits} dev lo")
        self._run(lines)
        log_path = self.workdir / f"{node.netns}.serve.log"
        process = podclient.PodProcess.start(
            node.netns, f"node/{node.name}", ports, log_path, echo_ports
        )
        self._resources.processes.append(process)
        try:
            process.wait_ready(time.monotonic() + podclient.READY_TIMEOUT)
        except podclient.PodProcessError as exc:
            raise SandboxError(f"node {node.name} servers did not start: {exc}") from exc
        return process

    def remove_pod(self, pod: SandboxPod) -> None:
        """Stop the pod's process and delete its namespace (and so its veth)."""
        self._check_open()
        if self._pods.get(pod.key) is not pod:
            raise ValueError(f"pod {pod.key} is not a live pod of this sandbox")
        node = self._nodes[pod.node]
        if pod.process is not None:
            pod.process.stop()
            self._resources.processes.remove(pod.process)
            pod.process = None
        self._run(
            [f"netns exec {node.netns} ip link del {pod.host_interface}", f"netns del {pod.netns}"]
        )
        self._resources.netns.remove(pod.netns)
        (self.netns_dir / pod.netns).unlink(missing_ok=True)
        del self._pods[pod.key]

    # -- helpers ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise SandboxError("sandbox is closed")

    def _check_node(self, node: SandboxNode) -> None:
        if self._nodes.get(node.name) != node:
            raise ValueError(f"node {node.name!r} is not part of this sandbox")

    def _claim_netns(self, suffix: str) -> str:
        """Return a fresh namespace name `psg-<run>-<suffix>`, hashed if too long or taken."""
        name = f"{self.prefix}{suffix}"
        if len(name) > MAX_NETNS_NAME or name in self._used_netns:
            digest = hashlib.sha256(suffix.encode()).hexdigest()
            for attempt in range(1000):
                tail = digest[:8] if attempt == 0 else f"{digest[:6]}{attempt}"
                room = MAX_NETNS_NAME - len(self.prefix) - len(tail) - 1
                name = f"{self.prefix}{suffix[:room].rstrip('-.')}-{tail}"
                if name not in self._used_netns:
                    break
            else:
                raise SandboxError(f"cannot find a namespace name for {suffix!r}")
        self._used_netns.add(name)
        return name

    def _run(self, lines: Sequence[str]) -> None:
        try:
            iproute.run_batch(lines)
        except iproute.IpError as exc:
            raise SandboxError(str(exc)) from exc


# -- ip batch lines: how nodes, node links and pods are wired ---------------------------------


def _node_lines(workdir: pathlib.Path, netns: str, plan: addressing.NodePlan) -> list[str]:
    """Batch lines for a node namespace with its bridge holding the pods' gateway addresses."""
    return [
        f"netns add {netns}",
        iproute.sysctl_command(netns, _NODE_SYSCTLS),
        iproute.nested_batch(
            workdir,
            netns,
            "setup",
            [
                "link set lo up",
                # A fixed address: a bridge without one takes its lowest port's, so removing
                # a pod could change the gateway's MAC under the other pods' ARP caches.
                f"link add {BRIDGE} address {bridge_mac(plan.index)} type bridge "
                "stp_state 0 forward_delay 0 mcast_snooping 0",
                f"addr add {plan.bridge_v4} dev {BRIDGE}",
                f"addr add {plan.bridge_v6} dev {BRIDGE} nodad",
                f"link set {BRIDGE} up",
            ],
        ),
    ]


def _link_lines(workdir: pathlib.Path, a: SandboxNode, b: SandboxNode) -> list[str]:
    """Batch lines for the veth link between existing node a and new node b, with routes."""
    link = addressing.link_plan(a.index, b.index)
    a_if, b_if = f"psgn{b.index}", f"psgn{a.index}"  # named after the node at the far end

    def up(interface: str, v4: str, v6: str) -> list[str]:
        return [
            f"addr add {v4} dev {interface}",
            f"addr add {v6} dev {interface} nodad",
            f"link set {interface} up",
        ]

    def routes(interface: str, far: SandboxNode, via4: str, via6: str) -> list[str]:
        return [
            f"route add {far.pod_cidr_v4} via {via4} dev {interface}",
            f"route add {far.pod_cidr_v6} via {via6} dev {interface}",
        ]

    return [
        f"link add {a_if} netns {a.netns} type veth peer name {b_if} netns {b.netns}",
        iproute.nested_batch(
            workdir, a.netns, f"up{b.index}", up(a_if, str(link.a_v4), str(link.a_v6))
        ),
        iproute.nested_batch(
            workdir,
            b.netns,
            f"link{a.index}",
            up(b_if, str(link.b_v4), str(link.b_v6))
            + routes(b_if, a, str(link.a_v4.ip), str(link.a_v6.ip)),
        ),
        iproute.nested_batch(
            workdir,
            a.netns,
            f"routes{b.index}",
            routes(a_if, b, str(link.b_v4.ip), str(link.b_v6.ip)),
        ),
    ]


def _pod_lines(workdir: pathlib.Path, node: SandboxNode, pods: Sequence[SandboxPod]) -> list[str]:
    """Batch lines for `pods` on `node`: each pod's namespace, sysctls and veth; the node's ends
    of the veths on the bridge; then each pod's addresses and routes via the node's gateway."""
    lines: list[str] = []
    node_lines: list[str] = []
    pod_batches: list[str] = []
    for pod in pods:
        setup = [
            "link set lo up",
            f"addr add {pod.ipv4}/32 dev {POD_INTERFACE}",
            f"link set {POD_INTERFACE} up",
            f"route add {node.ipv4}/32 dev {POD_INTERFACE} scope link",
            f"route add 0.0.0.0/0 via {node.ipv4} dev {POD_INTERFACE}",
        ]
        if pod.ipv6 is not None:
            setup += [
                f"addr add {pod.ipv6}/128 dev {POD_INTERFACE} nodad",
                f"route add {node.ipv6}/128 dev {POD_INTERFACE}",
                f"route add ::/0 via {node.ipv6} dev {POD_INTERFACE}",
            ]
        veth = pod.host_interface
        lines += [
            f"netns add {pod.netns}",
            iproute.sysctl_command(pod.netns, _POD_SYSCTLS),
            f"link add {veth} netns {node.netns} type veth peer name {POD_INTERFACE} "
            f"netns {pod.netns}",
        ]
        node_lines += [f"link set {veth} master {BRIDGE}", f"link set {veth} up"]
        pod_batches.append(iproute.nested_batch(workdir, pod.netns, "setup", setup))
    tag = f"pods{pods[0].host_interface}" if pods else "pods"
    lines.append(iproute.nested_batch(workdir, node.netns, tag, node_lines))
    return lines + pod_batches
