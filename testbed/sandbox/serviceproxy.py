"""A kube-proxy stand-in for sandbox nodes: nftables DNAT from Service addresses to backends.

Tests and the demo must reach pods through real ClusterIPs, translated AFTER the packet has
left the client pod's namespace, exactly as on a cluster node (where podseg's egress rules see
the ClusterIP and the proxy rewrites it later). Like kube-proxy's nftables mode, each sandbox
node namespace gets one table, `table inet psg-proxy`:

* `prerouting` (nat, dstnat): `daddr . l4proto . dport` looked up in a verdict map per family
  -> a chain per Service port, which picks a ready backend with `numgen random mod N` and jumps
  to the backend's chain, which DNATs to `backend:targetPort` (the EndpointSlice's resolved
  number). ClusterIPs, externalIPs and LoadBalancer ingress IPs are all frontends.
* A Service port without ready backends is rejected in `forward` (the client sees an ICMP
  error at once, as with kube-proxy) -- so a podseg drop (a silent timeout) stays tell-apart.
* Backends that reach themselves through their own Service (hairpin) are marked for
  masquerade in `postrouting` as kube-proxy does, but this does not work in the sandbox yet
  (the packet never reaches conntrack confirmation; not needed by any test, not investigated).

Pods route everything through their node (see `testbed.sandbox.topology`), so requests and
replies both cross the node namespace, whose conntrack un-NATs replies: the client sees the
ClusterIP, the backend sees the client pod's own address (no SNAT otherwise).

It watches Services and EndpointSlices through the API (the project's list/watch reflector)
and rewrites the table in every node namespace when they change (one `nft -f` transaction per
node). `synced()` tells whether the kernel holds the rules for everything seen so far.
"""

from __future__ import annotations

import ipaddress
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import kubernetes.client

from agent import model
from agent.k8s import convert, watch

TABLE = "psg-proxy"
MASQUERADE_MARK = 0x4000
_APPLY_TIMEOUT = 20.0


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _ip_text(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def render(services: Iterable[model.Service], slices: Iterable[model.EndpointSlice]) -> str:
    """The whole `nft -f` script (replace the table atomically) for this Service state."""
    by_service: dict[str, list[model.EndpointSlice]] = {}
    for piece in slices:
        by_service.setdefault(f"{piece.namespace}/{piece.service}", []).append(piece)
    maps: dict[int, list[str]] = {4: [], 6: []}
    no_endpoints: dict[int, list[str]] = {4: [], 6: []}
    chains: list[str] = []
    number = 0
    for service in sorted(services, key=lambda s: s.key):
        if service.headless or service.type == "ExternalName":
            continue
        frontends = [*service.cluster_ips, *service.external_ips]
        for family, address_type in ((4, "IPv4"), (6, "IPv6")):
            addrs = [ip for ip in frontends if ipaddress.ip_address(ip).version == family]
            if not addrs:
                continue
            pieces = [s for s in by_service.get(service.key, []) if s.address_type == address_type]
            for port in service.ports:
                proto = port.protocol.lower()
                backends = _ready_backends(port, pieces)
                keys = [f"{ip} . {proto} . {port.port}" for ip in addrs]
                if not backends:
                    no_endpoints[family].extend(keys)
                    continue
                number += 1
                chain = f"svc{number}"
                maps[family].extend(f"{k} : goto {chain}" for k in keys)
                chains += _service_chains(chain, family, proto, sorted(backends))
    return _script(maps, no_endpoints, chains)


def _ready_backends(
    port: model.ServicePort, pieces: Iterable[model.EndpointSlice]
) -> set[tuple[str, int]]:
    """(address, target port) of every ready endpoint of `port`, the port number resolved by
    each EndpointSlice (by port name and protocol)."""
    backends: set[tuple[str, int]] = set()
    for piece in pieces:
        resolved = [
            p.port for p in piece.ports if p.name == port.name and p.protocol == port.protocol
        ]
        if not resolved or resolved[0] is None:
            continue
        for endpoint in piece.endpoints:
            if endpoint.ready:
                backends.update((ip, resolved[0]) for ip in endpoint.addresses)
    return backends


def _service_chains(
    chain: str, family: int, proto: str, backends: Sequence[tuple[str, int]]
) -> list[str]:
    """A chain per backend (mark for hairpin masquerade, DNAT), then the Service port's chain,
    which picks one of them at random."""
    nfamily = "ip6" if family == 6 else "ip"
    chains = []
    picks = []
    for i, (ip, target) in enumerate(backends):
        ep_chain = f"{chain}ep{i}"
        chains.append(
            f"  chain {ep_chain} {{\n"
            f"    {nfamily} saddr {ip} meta mark set meta mark | {MASQUERADE_MARK:#x}\n"
            f"    meta l4proto {proto} dnat {nfamily} to {_ip_text(ip)}:{target}\n"
            "  }"
        )
        picks.append(f"{i} : goto {ep_chain}")
    chains.append(
        f"  chain {chain} {{\n"
        f"    numgen random mod {len(backends)} vmap {{ {', '.join(picks)} }}\n"
        "  }"
    )
    return chains


def _script(
    maps: dict[int, list[str]], no_endpoints: dict[int, list[str]], chains: list[str]
) -> str:
    """The table: per family the frontend verdict map and the set without endpoints, the
    base chains (DNAT, reject, masquerade), then the Service chains."""
    lines = [f"table inet {TABLE}", f"delete table inet {TABLE}", f"table inet {TABLE} {{"]
    for family, kind in ((4, "ipv4_addr"), (6, "ipv6_addr")):
        lines.append(f"  map services{family} {{")
        lines.append(f"    type {kind} . inet_proto . inet_service : verdict")
        if maps[family]:
            lines.append(f"    elements = {{ {', '.join(maps[family])} }}")
        lines.append("  }")
        lines.append(f"  set no_endpoints{family} {{")
        lines.append(f"    type {kind} . inet_proto . inet_service")
        if no_endpoints[family]:
            lines.append(f"    elements = {{ {', '.join(no_endpoints[family])} }}")
        lines.append("  }")
    lines += [
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        "    ip daddr . meta l4proto . th dport vmap @services4",
        "    ip6 daddr . meta l4proto . th dport vmap @services6",
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter - 10; policy accept;",
        "    ip daddr . meta l4proto . th dport @no_endpoints4 reject",
        "    ip6 daddr . meta l4proto . th dport @no_endpoints6 reject",
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f"    meta mark & {MASQUERADE_MARK:#x} == {MASQUERADE_MARK:#x} masquerade",
        "  }",
        *chains,
        "}",
    ]
    return "\n".join(lines) + "\n"


class ProxyError(RuntimeError):
    """Programming the proxy table into a node namespace failed."""


def apply(netns: str, script: str) -> None:
    """Load `script` inside the node namespace `netns` (one nft transaction)."""
    result = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=_APPLY_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise ProxyError(f"nft in {netns} failed: {result.stderr.strip()}\n{script}")


class ServiceProxy:
    """Watches Services and EndpointSlices and keeps every node namespace's table current."""

    def __init__(self, api: kubernetes.client.ApiClient, node_netns: Sequence[str]) -> None:
        self.node_netns = list(node_netns)
        self._lock = threading.Condition()
        self._objects: dict[str, dict[str, dict[str, Any]]] = {
            "services": {},
            "endpointslices": {},
        }
        self._listed: set[str] = set()
        self._seen = 0  # generation of what the reflectors delivered
        self._applied = 0  # generation whose rules are in the kernel
        self._stop = threading.Event()
        self.errors: list[str] = []
        self.applies = 0
        core = kubernetes.client.CoreV1Api(api)
        discovery = kubernetes.client.DiscoveryV1Api(api)
        self._reflectors = [
            watch.Reflector(
                "services", core.list_service_for_all_namespaces, self._deliver, watch_timeout=60
            ),
            watch.Reflector(
                "endpointslices",
                discovery.list_endpoint_slice_for_all_namespaces,
                self._deliver,
                watch_timeout=60,
            ),
        ]
        self._thread = threading.Thread(target=self._run, name="service-proxy", daemon=True)
        self.script = ""

    def start(self) -> None:
        for reflector in self._reflectors:
            reflector.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        for reflector in self._reflectors:
            reflector.stop()
        self._thread.join(5)
        for reflector in self._reflectors:
            reflector.join(2)

    def synced(self) -> bool:
        """Whether both kinds are listed and every change seen so far is in the kernel."""
        with self._lock:
            return len(self._listed) == 2 and self._applied == self._seen

    def wait_synced(self, timeout: float = 10.0) -> None:
        """Wait (bounded) until `synced()`; call after an API write has been acknowledged."""
        deadline = time.monotonic() + timeout
        # A write acknowledged by the API reaches the watch shortly after; give it a moment
        # to arrive before trusting `synced()`, then poll.
        time.sleep(0.05)
        while not self.synced():
            if time.monotonic() > deadline:
                raise TimeoutError(f"service proxy not synced after {timeout}s: {self.errors}")
            time.sleep(0.02)

    def _deliver(self, item: watch.WatchEvent | watch.Relist) -> None:
        with self._lock:
            table = self._objects[item.resource]
            if isinstance(item, watch.Relist):
                table.clear()
                table.update({_key(obj): obj for obj in item.items})
                self._listed.add(item.resource)
            elif isinstance(item.obj, dict):  # Services and slices arrive as dicts (not typed)
                if item.type == "DELETED":
                    table.pop(_key(item.obj), None)
                else:
                    table[_key(item.obj)] = item.obj
            self._seen += 1
            self._lock.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                while not self._stop.is_set() and (
                    self._applied == self._seen or len(self._listed) < 2
                ):
                    self._lock.wait(1.0)
                if self._stop.is_set():
                    return
                generation = self._seen
                services = [convert.service(o) for o in self._objects["services"].values()]
                slices = [
                    convert.endpoint_slice(o) for o in self._objects["endpointslices"].values()
                ]
            script = render(services, slices)
            try:
                if script != self.script:
                    for netns in self.node_netns:
                        apply(netns, script)
                    self.script = script
                    self.applies += 1
            except (ProxyError, OSError, subprocess.SubprocessError) as exc:
                self.errors.append(str(exc))
                self._stop.wait(0.5)
                continue
            with self._lock:
                self._applied = generation
                self._lock.notify_all()
