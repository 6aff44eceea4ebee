"""The one pure entry point of the calculation: the desired ruleset of pod P in snapshot S, and
which local pods a change C affects.

Why one function: a pod's ruleset is its NetworkPolicy verdicts (`compile`), the Services its
egress reaches (`services`, inside `compile`), its quarantine, node guard and anti-spoofing
(`containment`) and its mode (`mode`). The agent, the tests and the benchmarks all need exactly
that composition; assembling it anywhere else risks leaving a part out (desired state must
depend only on the snapshot, never on who asks or in which order events came). Besides the
snapshot, two facts of the pod's namespace enter: what the scan saw there (`ruleset.Link`:
link-local addresses, gateways, on-link routes) and whether the namespace is contested
(`lockdown`, see `agent.dataplane.netns`).

`Cluster` holds what every pod's ruleset shares (indexes built once per snapshot); the sync
layer keeps its indexes up to date between passes and builds a `Cluster` per pass, tests and
benchmarks build one from plain collections with `Cluster.of`.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from agent import model
from agent.calc import affected as calc_affected
from agent.calc import compile as calc_compile
from agent.calc import containment, intervals, ruleset
from agent.calc import index as calc_index
from agent.calc import mode as calc_mode
from agent.calc import services as calc_services
from agent.tiers import compile as tiers_compile
from agent.tiers import evaluate as tiers_evaluate
from agent.tiers import model as tiers_model


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The shared part of a snapshot: namespaces and nodes, and the indexes of policies, peer
    pods and Services; plus the node guard's ports (None: the guard is off)."""

    namespaces: Mapping[str, model.Namespace]
    nodes: Mapping[str, model.Node]
    policies: calc_index.PolicyIndex
    peers: calc_compile.ClusterIndex
    services: calc_services.ServiceIndex
    guard_ports: tuple[ruleset.ProtoPorts, ...] | None = None
    pod_may_loosen_mode: bool = False  # --allow-pod-visibility
    allow_from_widest: tuple[int, int] = containment.WIDEST_ALLOW_FROM
    guard_extra: tuple[ruleset.AddrRange, ...] = ()  # --node-guard-extra-addresses
    guard_exempt: tuple[str, ...] = containment.DEFAULT_NODE_GUARD_EXEMPT
    # ClusterNetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy (agent.tiers).
    admin: tuple[tiers_model.ClusterPolicy, ...] = ()

    @functools.cached_property
    def tier_peers(self) -> tuple[tiers_compile.Peer, ...]:
        """Every possible admin-tier peer: the peer pods and the nodes (built once)."""
        return tier_peers(self.peers.peers, self.namespaces, self.nodes.values())

    @classmethod
    def of(
        cls,
        *,
        pods: Iterable[model.Pod],
        namespaces: Mapping[str, model.Namespace],
        policies: Iterable[model.NetworkPolicy] = (),
        nodes: Iterable[model.Node] = (),
        services: Iterable[model.Service] = (),
        endpointslices: Iterable[model.EndpointSlice] = (),
        guard_ports: Sequence[ruleset.ProtoPorts] | None = None,
        admin: Iterable[tiers_model.ClusterPolicy] = (),
    ) -> Cluster:
        """Index a snapshot from scratch (what a relist does; passes update theirs)."""
        pods = list(pods)
        return cls(
            namespaces=dict(namespaces),
            nodes={node.name: node for node in nodes},
            policies=calc_index.PolicyIndex.build(policies),
            peers=calc_compile.build_index(namespaces, pods),
            services=calc_services.build_index(services, endpointslices),
            guard_ports=tuple(guard_ports) if guard_ports is not None else None,
            admin=tuple(sorted(admin, key=lambda p: p.order)),
        )


def with_host_addresses(
    nodes: Mapping[str, model.Node],
    own: str,
    host: Sequence[str],
    virtual: Sequence[ruleset.AddrRange] = (),
) -> Mapping[str, model.Node]:
    """`nodes` with the agent's own Node also holding the addresses of the namespace the agent
    runs in, when that namespace is the node's: it holds one of the Node's API addresses (the
    DaemonSet's host network; never so in a sandbox, where the agent is not on its node).

    Why: a Node object lists its InternalIP and ExternalIP, but the node also owns addresses
    no API object names, and uses them: on a bridge network (the CNI `bridge` plugin, flannel,
    kubenet) the kubelet's probes reach a pod from the bridge's address, its gateway. An
    ingress-isolated pod must still accept its own node (upstream semantics), and the node
    guard must keep pods away from the kubelet on that address too (a kubelet listening on
    every address answers there). Loopback and link-local addresses are not the node's to
    others, and Service virtual addresses (`virtual`; IPVS puts every ClusterIP on the host's
    kube-ipvs0) are not the node either."""
    node = nodes.get(own)
    listed = set(_norm_all(node.addresses)) if node is not None else set()
    if node is None or not listed & set(_norm_all(host)):
        return nodes
    extra = []
    for address in sorted(set(_norm_all(host)) - listed):
        ip = ipaddress.ip_address(address)
        if ip.is_loopback or ip.is_link_local or intervals.contains(virtual, ip.version, int(ip)):
            continue
        extra.append(address)
    if not extra:
        return nodes
    merged = dataclasses.replace(node, addresses=(*node.addresses, *extra))
    return {**nodes, own: merged}


def _norm_all(addresses: Iterable[str]) -> list[str]:
    out = []
    for address in addresses:
        try:
            out.append(str(ipaddress.ip_address(address)))
        except ValueError:
            continue
    return out


@dataclasses.dataclass(frozen=True)
class Desired:
    """A pod's desired ruleset, and what the calculation ignored to get there (reported by
    the sync layer): invalid forensic entries of a quarantine annotation, and an invalid
    `podseg.io/mode` label value (None when valid or absent), a pod's `podseg.io/mode` label
    refused because it would loosen its namespace's mode."""

    ruleset: ruleset.PodRuleset
    containment_errors: tuple[str, ...] = ()
    invalid_mode: str | None = None
    refused_mode: str | None = None  # a pod label that would have loosened the mode


def desired(
    pod: model.Pod,
    cluster: Cluster,
    link: ruleset.Link | None = None,
    *,
    lockdown: bool = False,
) -> Desired:
    """The ruleset pod `pod` must have in snapshot `cluster`, in a namespace where the scan saw
    `link`: NetworkPolicy (with Services), then quarantine, node guard and anti-spoofing, in the
    pod's mode; `lockdown` for a contested namespace. Depends on nothing else."""
    node = cluster.nodes.get(pod.node_name or "")
    mode = calc_mode.resolve(pod, cluster.namespaces, cluster.pod_may_loosen_mode)
    compiled = calc_compile.compile_indexed(
        pod,
        cluster.policies.candidates(pod),
        cluster.peers,
        node.addresses if node is not None else (),
        cluster.services,
        mode=mode.mode,
    )
    if cluster.admin:
        compiled = with_tiers(compiled, pod, cluster.admin, cluster.namespaces, cluster.tier_peers)
    contained = containment.contain(
        compiled,
        pod,
        cluster.namespaces.get(pod.namespace),
        cluster.nodes.values(),
        cluster.guard_ports,
        cluster.allow_from_widest,
        cluster.guard_exempt,
        link=link,
        guard_extra=cluster.guard_extra,
    )
    rs = containment.lockdown(contained.ruleset) if lockdown else contained.ruleset
    return Desired(rs, contained.errors, mode.invalid, mode.refused)


def tier_peers(
    pods: Iterable[calc_compile.PeerPod],
    namespaces: Mapping[str, model.Namespace],
    nodes: Iterable[model.Node],
) -> tuple[tiers_compile.Peer, ...]:
    """The possible admin-tier peers of a snapshot: its peer pods (with their namespaces'
    labels) and its nodes (with theirs)."""
    return (
        *(
            tiers_compile.Peer(
                p.addrs, p.pod, calc_compile.namespace_labels(p.pod.namespace, namespaces)
            )
            for p in pods
        ),
        *(
            tiers_compile.Peer(calc_compile.node_ranges(n.addresses), node_labels=n.labels)
            for n in nodes
        ),
    )


def with_tiers(
    rs: ruleset.PodRuleset,
    pod: model.Pod,
    admin: Sequence[tiers_model.ClusterPolicy],
    namespaces: Mapping[str, model.Namespace],
    peers: Sequence[tiers_compile.Peer],
    regions: tiers_compile.Regions | None = None,
) -> ruleset.PodRuleset:
    """`rs` with the admin tiers of both directions (`agent.tiers.compile`); `regions`: the
    rules' regions from a cache (`agent.tiers.resolve`) instead of from `peers`."""
    labels = calc_compile.namespace_labels(pod.namespace, namespaces)

    def tiered(direction: str, current: ruleset.DirectionRuleset) -> ruleset.DirectionRuleset:
        admin_tier, baseline = (
            tiers_compile.tier_entries(admin, tier, direction, pod, labels, peers, regions)
            for tier in tiers_model.TIERS
        )
        return dataclasses.replace(current, admin=admin_tier, baseline=baseline)

    return dataclasses.replace(
        rs,
        ingress=tiered(tiers_evaluate.INGRESS, rs.ingress),
        egress=tiered(tiers_evaluate.EGRESS, rs.egress),
    )


def affected(
    local: Mapping[str, model.Pod],
    namespaces: Mapping[str, model.Namespace],
    policies: Iterable[model.NetworkPolicy],
    index: calc_index.PolicyIndex,
    changes: calc_affected.Changes,
) -> set[str] | None:
    """Keys of the local pods whose desired ruleset `changes` may have changed (a superset,
    never missing one); None means all of them. `index` indexes `policies`."""
    return calc_affected.affected(
        local, policies, namespaces, changes, policies_for=index.candidates
    )
