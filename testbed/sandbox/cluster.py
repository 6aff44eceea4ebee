"""A whole sandbox cluster: emulator + sandbox nodes + real agent processes + pod objects.

The demo and the end-to-end tests need the same glue: start the embedded API emulator, write
a kubeconfig, build node namespaces, start one `podseg agent` process per node, and for each
sandbox pod create the matching Pod object (node, labels, container ports, pod IPs) through
the official client, exactly as a kubelet would report it.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import kubernetes.client
import kubernetes.config

from testbed.emulator import server as emulator_server
from testbed.sandbox import admin, endpoints, serviceproxy, topology

PORTS = (80, 81)
PROTOCOLS = ("TCP", "UDP")


def container_ports(ports: Sequence[int] = PORTS) -> list[dict[str, Any]]:
    """Named container ports like the upstream netpol e2e pods: serve-80-tcp, serve-81-udp..."""
    return [
        {"name": f"serve-{port}-{proto.lower()}", "containerPort": port, "protocol": proto}
        for port in ports
        for proto in PROTOCOLS
    ]


class AgentProcess:
    """One `podseg agent` child; its JSON log lines are collected for the caller to inspect."""

    def __init__(
        self,
        node: str,
        kubeconfig: str,
        extra_args: Sequence[str] = (),
        netns_dir: str = "/run/netns",
        proc_scan: bool = True,
    ) -> None:
        self.node = node
        self.command = [
            sys.executable,
            "-m",
            "agent",
            "agent",
            "--node-name",
            node,
            "--kubeconfig",
            kubeconfig,
            "--netns-dir",
            netns_dir,
            *(() if proc_scan else ("--no-proc-scan",)),
            "--metrics-address",
            "127.0.0.1:0",
            "--log-format",
            "json",
            *extra_args,
        ]
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._lock = threading.Lock()
        self._popen: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self.metrics_port: int | None = None

    def start(self) -> None:
        self.lines.clear()
        self.metrics_port = None
        self._popen = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._popen is not None and self._popen.stderr is not None
        for line in self._popen.stderr:
            with self._lock:
                self.raw.append(line)
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(entry, dict):
                    continue
                self.lines.append(entry)
                if entry.get("event") == "agent_started":
                    self.metrics_port = int(entry["metrics_port"])

    def events(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.lines if e.get("event") == name]

    def http(self, path: str) -> tuple[int, str]:
        if self.metrics_port is None:
            return 0, ""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2
            ) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()
        except OSError:
            return 0, ""

    def ready(self) -> bool:
        return self.http("/readyz")[0] == 200

    @property
    def pid(self) -> int | None:
        """The agent process's pid (None before start)."""
        return self._popen.pid if self._popen is not None else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self._popen.terminate()
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        if self._reader is not None:
            self._reader.join(2)
        return self._popen.returncode


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class SandboxCluster:
    """Context manager owning every process, namespace and temp file it creates."""

    def __init__(self, nodes: Sequence[str] = ("node-1",), *, ipv6: bool = True) -> None:
        self.node_names = list(nodes)
        self.ipv6 = ipv6
        self.sandbox = topology.Sandbox()
        self.emulator = emulator_server.EmulatorThread(bookmark_interval=2.0)
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix="psg-cluster-"))
        self.kubeconfig = str(self.workdir / "kubeconfig")
        self.nodes: dict[str, topology.SandboxNode] = {}
        self.agents: dict[str, AgentProcess] = {}
        self.pods: dict[str, topology.SandboxPod] = {}
        # Typed as Any: we send plain JSON-shaped dicts, which the client accepts as bodies.
        self.core: Any = None
        self.networking: Any = None
        self.api_client: Any = None
        self.discovery: Any = None
        self.proxy: serviceproxy.ServiceProxy | None = None

    def __enter__(self) -> SandboxCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.emulator.start()
        self.emulator.write_kubeconfig(self.kubeconfig)
        api = kubernetes.config.new_client_from_config(config_file=self.kubeconfig)
        self.api_client = api
        self.core = kubernetes.client.CoreV1Api(api)
        self.networking = kubernetes.client.NetworkingV1Api(api)
        self.discovery = kubernetes.client.DiscoveryV1Api(api)
        # Where the agents keep their policy-status Leases (their default --lease-namespace).
        self.emulator.insert(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "podseg-system"}}
        )
        for name in self.node_names:
            self.nodes[name] = self.sandbox.add_node(name)
            node = self.nodes[name]
            # The kubelet reports the node's addresses in its status; the bridge addresses are
            # where this node's own traffic to its pods comes from.
            self.emulator.insert(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": name},
                    "status": {
                        "addresses": [
                            {"type": "InternalIP", "address": node.ipv4},
                            {"type": "InternalIP", "address": node.ipv6},
                            {"type": "Hostname", "address": name},
                        ]
                    },
                }
            )

    def start_agent(
        self, node: str, extra_args: Sequence[str] = (), wait: bool = True
    ) -> AgentProcess:
        # The agent searches this sandbox's namespaces only: another test run's sandbox on the
        # same machine is never swept or mistaken for one of ours. Its flow store lives in the
        # cluster's work directory (never the node's /var/lib/podseg), one file per node.
        if not any(a == "--flow-store" or a.startswith("--flow-store=") for a in extra_args):
            extra_args = ["--flow-store", str(self.workdir / f"flows-{node}.sqlite"), *extra_args]
        agent = self.agents.get(node) or AgentProcess(
            node,
            self.kubeconfig,
            extra_args,
            netns_dir=str(self.sandbox.netns_dir),
            proc_scan=False,
        )
        self.agents[node] = agent
        agent.start()
        if wait:
            wait_until(agent.ready, 30, f"agent on {node} ready")
            # /readyz can answer before the reader thread has the lines the agent wrote up to
            # its readiness; callers read them (ruleset_adopted, ...) right after this returns.
            wait_until(lambda: agent.events("agent_ready"), 10, f"agent on {node}: agent_ready")
        return agent

    def close(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        if self.proxy is not None:
            self.proxy.stop()
        self.sandbox.close()
        self.emulator.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- objects --------------------------------------------------------------------------
    def ensure_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        try:
            self.core.read_namespace(name)
        except kubernetes.client.exceptions.ApiException as exc:
            if exc.status != 404:
                raise
            self.core.create_namespace(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": name, "labels": dict(labels or {})},
                }
            )

    def add_pod(
        self,
        namespace: str,
        name: str,
        labels: Mapping[str, str],
        *,
        node: str | None = None,
        ports: Sequence[dict[str, Any]] | None = None,
        serve: Sequence[int] | None = None,
        echo_ports: Sequence[int] = (),
        annotations: Mapping[str, str] | None = None,
    ) -> topology.SandboxPod:
        node = node or self.node_names[0]
        self.ensure_namespace(namespace)
        pod = self.sandbox.add_pod(
            self.nodes[node], namespace, name, ipv6=self.ipv6, ports=serve, echo_ports=echo_ports
        )
        self.pods[f"{namespace}/{name}"] = pod
        self.core.create_namespaced_pod(
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": dict(labels),
                    "annotations": dict(annotations or {}),
                },
                "spec": {
                    "nodeName": node,
                    "containers": [
                        {
                            "name": "c",
                            "image": "podseg/probe",
                            "ports": list(ports or container_ports()),
                        }
                    ],
                },
            },
        )
        ips = [pod.ipv4] + ([pod.ipv6] if pod.ipv6 else [])
        self.core.patch_namespaced_pod_status(
            name,
            namespace,
            {"status": {"phase": "Running", "podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips]}},
        )
        return pod

    def label_pod(self, key: str, labels: Mapping[str, str | None]) -> None:
        namespace, name = key.split("/")
        self.core.patch_namespaced_pod(name, namespace, {"metadata": {"labels": dict(labels)}})

    def annotate_pod(self, key: str, annotations: Mapping[str, str | None]) -> None:
        namespace, name = key.split("/")
        self.core.patch_namespaced_pod(
            name, namespace, {"metadata": {"annotations": dict(annotations)}}
        )

    def label_namespace(self, name: str, labels: Mapping[str, str | None]) -> None:
        self.core.patch_namespace(name, {"metadata": {"labels": dict(labels)}})

    def apply_policy(self, policy: Mapping[str, Any]) -> None:
        meta = policy["metadata"]
        body = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", **policy}
        try:
            self.networking.create_namespaced_network_policy(meta["namespace"], body)
        except kubernetes.client.exceptions.ApiException as exc:
            if exc.status != 409:
                raise
            self.networking.replace_namespaced_network_policy(meta["name"], meta["namespace"], body)

    def delete_policy(self, namespace: str, name: str) -> None:
        self.networking.delete_namespaced_network_policy(name, namespace)

    def delete_all_policies(self) -> None:
        for policy in self.networking.list_network_policy_for_all_namespaces().items:
            self.delete_policy(policy.metadata.namespace, policy.metadata.name)

    # -- admin policies (testbed.sandbox.admin) --------------------------------------------
    def install_admin_crds(self) -> list[str]:
        """Apply the network-policy-api CRDs of deploy/crds/; wait until they are served."""
        return admin.install_crds(self.api_client)

    def uninstall_admin_crds(self, names: Sequence[str] = admin.CRD_NAMES) -> None:
        admin.uninstall_crds(self.api_client, tuple(names))

    def apply_admin_policy(self, kind: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Create or update a ClusterNetworkPolicy / AdminNetworkPolicy /
        BaselineAdminNetworkPolicy."""
        return admin.apply(self.api_client, admin.policy(kind, name, dict(spec)))

    def delete_admin_policy(self, kind: str, name: str) -> None:
        admin.delete(self.api_client, admin.policy(kind, name, {}))

    # -- Services (testbed.sandbox.serviceproxy, testbed.sandbox.endpoints) -------------------
    def start_service_proxy(self) -> serviceproxy.ServiceProxy:
        """Start the kube-proxy stand-in on every node namespace (idempotent)."""
        if self.proxy is None:
            netns = [node.netns for node in self.nodes.values()]
            self.proxy = serviceproxy.ServiceProxy(self.api_client, netns)
            self.proxy.start()
            self.proxy.wait_synced(30)
        return self.proxy

    def apply_service(self, service: Mapping[str, Any], *, sync: bool = True) -> dict[str, Any]:
        """Create or replace a Service; with `sync`, write its EndpointSlices too."""
        meta = service["metadata"]
        body = {"apiVersion": "v1", "kind": "Service", **service}
        try:
            self.core.create_namespaced_service(meta["namespace"], body)
        except kubernetes.client.exceptions.ApiException as exc:
            if exc.status != 409:
                raise
            self.core.replace_namespaced_service(meta["name"], meta["namespace"], body)
        if sync:
            self.sync_endpoints(meta["namespace"], meta["name"])
        return self.service(meta["namespace"], meta["name"])

    def service(self, namespace: str, name: str) -> dict[str, Any]:
        """The Service as the API server returns it (with its allocated ClusterIPs)."""
        response = self.core.read_namespaced_service(name, namespace, _preload_content=False)
        result: dict[str, Any] = json.loads(response.data)
        return result

    def sync_endpoints(
        self, namespace: str, name: str, not_ready: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """Do the EndpointSlice controller's job for one Service, then wait for the proxy."""
        service = self.service(namespace, name)
        response = self.core.list_namespaced_pod(namespace, _preload_content=False)
        pods = json.loads(response.data)["items"]
        wanted = {s["metadata"]["name"]: s for s in endpoints.slices_for(service, pods, not_ready)}
        selector = f"{endpoints.SERVICE_NAME_LABEL}={name}"
        existing = json.loads(
            self.discovery.list_namespaced_endpoint_slice(
                namespace, label_selector=selector, _preload_content=False
            ).data
        )["items"]
        for item in existing:
            item_name = item["metadata"]["name"]
            if item_name not in wanted:
                self.discovery.delete_namespaced_endpoint_slice(item_name, namespace)
                continue
            body = wanted.pop(item_name)
            body["metadata"]["resourceVersion"] = item["metadata"]["resourceVersion"]
            self.discovery.replace_namespaced_endpoint_slice(item_name, namespace, body)
        for body in wanted.values():
            self.discovery.create_namespaced_endpoint_slice(namespace, body)
        if self.proxy is not None:
            self.proxy.wait_synced()
        return list(endpoints.slices_for(service, pods, not_ready))

    def apply_endpointslice(self, body: Mapping[str, Any]) -> None:
        """Create or replace a hand-made EndpointSlice (Services without selector, bad input)."""
        meta = body["metadata"]
        full = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", **body}
        try:
            self.discovery.create_namespaced_endpoint_slice(meta["namespace"], full)
        except kubernetes.client.exceptions.ApiException as exc:
            if exc.status != 409:
                raise
            self.discovery.replace_namespaced_endpoint_slice(meta["name"], meta["namespace"], full)
        if self.proxy is not None:
            self.proxy.wait_synced()

    def delete_service(self, namespace: str, name: str) -> None:
        """Delete a Service and its EndpointSlices (what garbage collection would do)."""
        self.core.delete_namespaced_service(name, namespace)
        self.discovery.delete_collection_namespaced_endpoint_slice(
            namespace, label_selector=f"{endpoints.SERVICE_NAME_LABEL}={name}"
        )
        if self.proxy is not None:
            self.proxy.wait_synced()
