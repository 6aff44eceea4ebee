"""The derived views of the store a pass needs, kept up to date between passes instead of
rebuilt: this node's pods, the Service frontends, and the incremental
calculator of the local pods' desired rulesets (`agent.calc.incremental`), fed each batch's
changes.

Why: a 10,000-pod cluster makes each of these cost milliseconds to rebuild, on every event;
updated from what a batch changed, they cost what the change touched. A relist (or the first
pass) rebuilds them whole, so they can never drift from the store for long.
"""

from __future__ import annotations

import ipaddress

from agent import config, model, store
from agent.calc import desired as calc_desired
from agent.calc import incremental
from agent.calc import services as calc_services


class Indexes:
    def __init__(self, settings: config.Settings, cluster: store.Store) -> None:
        self.settings = settings
        self.store = cluster
        self._services: calc_services.ServiceIndex | None = None  # until Services change
        self._local: dict[str, model.Pod] | None = None
        # The addresses of the agent's own namespace, from the last scan (None: none yet), and
        # whether they moved since the last pass took them (agent.calc.desired.with_host_addresses).
        self.host: tuple[str, ...] | None = None
        self.host_moved = False
        self._calc: incremental.Calculator | None = None  # None: build it whole when asked

    def set_host(self, addresses: tuple[str, ...]) -> None:
        """A scan's view of the agent's own namespace. A change of the addresses that can be
        the node's re-plans the pods the calculator then finds changed; a loopback or
        link-local one cannot (`desired.with_host_addresses` leaves them out), and each new
        pod's host-side veth brings an IPv6 link-local address."""
        if self.host is None or _nodes_own(addresses) != _nodes_own(self.host):
            self.host_moved = True
        self.host = addresses

    def take_host_moved(self) -> bool:
        moved, self.host_moved = self.host_moved, False
        return moved

    def is_local(self, pod: model.Pod) -> bool:
        return pod.node_name == self.settings.node_name and not pod.host_network

    def changed(self, change: store.Change | None) -> bool:
        """Take note of a batch's change (None: anything may have changed); True when the
        Service frontends were rebuilt (their problems are then worth reporting)."""
        if change is None or change.relisted:
            self._calc = None
        elif self._calc is not None:
            self._feed(self._calc, change)
        if change is None or change.services or change.endpointslices or change.relisted:
            self._services = None
            return True
        return False

    def local_pods(self, change: store.Change | None = None) -> dict[str, model.Pod]:
        """This node's pods; with `change`, updated from the last call's answer for only the
        pods that changed (scanning 10,000 cluster pods costs ~4 ms per pass)."""
        if change is None or change.relisted or self._local is None:
            self._local = {key: pod for key, pod in self.store.pods.items() if self.is_local(pod)}
        else:
            for key in change.pods:
                pod = self.store.pods.get(key)
                if pod is not None and self.is_local(pod):
                    self._local[key] = pod
                else:
                    self._local.pop(key, None)
        return dict(self._local)

    def services(self) -> calc_services.ServiceIndex:
        """The Service frontends, rebuilt only after a Service or EndpointSlice change (they
        do not depend on pods; `problems` is only read right after a rebuild)."""
        if self._services is None:
            self._services = calc_services.build_index(
                self.store.services.values(), self.store.endpointslices.values(), self.store.pods
            )
        return self._services

    def affected(self, local: dict[str, model.Pod], change: store.Change | None) -> set[str] | None:
        """The local pods whose desired ruleset `change` changed, exactly (the incremental
        calculator's answer); None: all of them (no change given, or a relist)."""
        if change is None or change.relisted or self._calc is None:
            return None
        return set(self.calculator().flush()) & local.keys()

    def _feed(self, calc: incremental.Calculator, change: store.Change) -> None:
        """Hand a batch's changes to the calculator (Nodes: see `calculator`)."""
        st = self.store
        for name in change.namespaces:
            calc.set_namespace(name, st.namespaces.get(name))
        for key in change.policies:
            calc.set_policy(key, st.policies.get(key))
        for key in change.services:
            calc.set_service(key, st.services.get(key))
        for key in change.endpointslices:
            calc.set_slice(key, st.endpointslices.get(key))
        for key in change.pods:
            calc.set_pod(key, st.pods.get(key))
        if change.admin:
            calc.set_admin(st.admin_policies())

    def calculator(self) -> incremental.Calculator:
        """The incremental calculator, up to date with the store and with the Nodes as
        `desired.Cluster` saw them (the agent's own Node with its namespace's addresses)."""
        st = self.store
        nodes = calc_desired.with_host_addresses(
            st.nodes, self.settings.node_name, self.host or (), self.services().virtual_addrs
        )
        calc = self._calc
        if calc is None:
            calc = self._calc = incremental.Calculator.of(
                self.settings.node_name,
                incremental.Settings(
                    guard_ports=self.settings.node_guard_ports,
                    pod_may_loosen_mode=self.settings.allow_pod_visibility,
                    allow_from_widest=self.settings.quarantine_widest_source,
                    guard_exempt=self.settings.node_guard_exempt_namespaces,
                    guard_extra=self.settings.node_guard_extra_addresses,
                ),
                pods=st.pods,
                namespaces=st.namespaces,
                policies=st.policies,
                nodes=nodes,
                services=st.services,
                slices=st.endpointslices,
                admin=st.admin_policies(),
            )
            return calc
        for name in set(nodes) | set(calc.nodes):
            if nodes.get(name) != calc.nodes.get(name):
                calc.set_node(name, nodes.get(name))
        return calc


def _nodes_own(addresses: tuple[str, ...]) -> frozenset[str]:
    """The addresses of the node's namespace that may be the node's to others."""
    own = set()
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            own.add(address)  # unreadable: kept, so a change of it still counts
            continue
        if not (ip.is_loopback or ip.is_link_local):
            own.add(str(ip))
    return frozenset(own)
