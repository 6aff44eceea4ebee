"""Frozen snapshots of the network-policy-api objects: one shape for ClusterNetworkPolicy
(v1alpha2) and AdminNetworkPolicy / BaselineAdminNetworkPolicy (v1alpha1), built only by
`agent.tiers.convert`.

One shape, because both APIs say the same thing: a tier (Admin above NetworkPolicy, Baseline
below it), a priority inside the tier, a subject, and ordered rules whose action (Accept, Deny,
Pass) is final for the first rule that matches. The v1alpha1 `Allow` is stored as `Accept`.
"""

from __future__ import annotations

import dataclasses

from agent import model

ADMIN = "Admin"
BASELINE = "Baseline"
TIERS = (ADMIN, BASELINE)

ACCEPT = "Accept"
DENY = "Deny"
PASS = "Pass"
ACTIONS = (ACCEPT, DENY, PASS)

CLUSTER_NETWORK_POLICY = "ClusterNetworkPolicy"
ADMIN_NETWORK_POLICY = "AdminNetworkPolicy"
BASELINE_ADMIN_NETWORK_POLICY = "BaselineAdminNetworkPolicy"
# BaselineAdminNetworkPolicy has no priority: it is evaluated after every Baseline-tier
# ClusterNetworkPolicy (whose priorities run 0..1000).
BANP_PRIORITY = 1001


@dataclasses.dataclass(frozen=True)
class NamespacedPods:
    """Pods selected by a namespace selector AND a pod selector (empty selects all)."""

    namespace_selector: model.LabelSelector = dataclasses.field(default_factory=model.LabelSelector)
    pod_selector: model.LabelSelector = dataclasses.field(default_factory=model.LabelSelector)


@dataclasses.dataclass(frozen=True)
class Subject:
    """The pods a policy applies to: all pods of the selected namespaces, or selected pods.

    Neither set (a malformed subject) selects no pod.
    """

    namespaces: model.LabelSelector | None = None
    pods: NamespacedPods | None = None


@dataclasses.dataclass(frozen=True)
class Peer:
    """One `from`/`to` entry; exactly one field is meaningful.

    `invalid`: failed validation, matches nothing. `unknown`: no field this agent knows is set
    (a newer CRD); the API asks implementations to fail closed: an Accept rule ignores the
    peer, a Deny or Pass rule becomes Deny for every peer.
    """

    namespaces: model.LabelSelector | None = None
    pods: NamespacedPods | None = None
    nodes: model.LabelSelector | None = None
    networks: tuple[str, ...] = ()
    invalid: bool = False
    unknown: bool = False


@dataclasses.dataclass(frozen=True)
class Port:
    """One destination port match. `protocol` with `start` None: every port of the protocol;
    `start`..`end` a range (end == start for one port); `named`: a container port name, of
    whatever protocol the destination pod declares it with (`protocol` is then "")."""

    protocol: str = "TCP"
    start: int | None = None
    end: int | None = None
    named: str | None = None
    invalid: bool = False


@dataclasses.dataclass(frozen=True)
class Rule:
    """An ingress or egress rule. Empty `ports` = every port; an empty `peers` matches nothing
    (the API requires at least one peer). `action` "" marks an unknown action: the rule
    matches nothing."""

    name: str
    action: str
    peers: tuple[Peer, ...] = ()
    ports: tuple[Port, ...] = ()


@dataclasses.dataclass(frozen=True)
class ClusterPolicy:
    """One admin policy of either API, with its tier and priority resolved."""

    kind: str
    name: str
    tier: str
    priority: int
    subject: Subject
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    errors: tuple[str, ...] = ()
    resource_version: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def order(self) -> tuple[int, int, str, str]:
        """Evaluation order: tier, priority, then kind and name (a stable tie-break where the
        API leaves equal priorities undefined)."""
        return (TIERS.index(self.tier), self.priority, self.kind, self.name)
