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
from collections.abc import Iterable, Mapping, Sequence

from agent import model
from agent.calc import affected as calc_affected
from agent.calc import compile as calc_compile
from agent.calc import containment, ruleset
from agent.calc import index as calc_index
from agent.calc import mode as calc_mode
from agent.calc import services as calc_services


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
        )


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
    contained = containment.contain(
        compiled,
        pod,
        cluster.namespaces.get(pod.namespace),
        cluster.nodes.values(),
        cluster.guard_ports,
        cluster.allow_from_widest,
        link=link,
        guard_extra=cluster.guard_extra,
    )
    rs = containment.lockdown(contained.ruleset) if lockdown else contained.ruleset
    return Desired(rs, contained.errors, mode.invalid, mode.refused)


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
