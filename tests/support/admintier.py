"""An Admin-tier policy of one ingress rule, compiled to a local pod's tier entries: the fixture
the renderer and first-commit tests share (`agent.tiers.compile.tier_entries`)."""

from __future__ import annotations

from collections.abc import Sequence

from agent import model
from agent.calc import ruleset
from agent.tiers import compile as tiers_compile
from agent.tiers import evaluate
from agent.tiers import model as tiers


def ingress_entries(
    rule: tiers.Rule, local: model.Pod, peers: Sequence[tiers_compile.Peer]
) -> tuple[ruleset.TierEntry, ...]:
    """`local`'s Admin ingress entries from a ClusterNetworkPolicy (priority 1, every
    namespace its subject) holding `rule` alone, with `peers` the cluster's pods."""
    policy = tiers.ClusterPolicy(
        tiers.CLUSTER_NETWORK_POLICY,
        "admin",
        tiers.ADMIN,
        1,
        tiers.Subject(namespaces=model.LabelSelector()),
        ingress=(rule,),
    )
    return tiers_compile.tier_entries((policy,), tiers.ADMIN, evaluate.INGRESS, local, {}, peers)
