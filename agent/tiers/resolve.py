"""The admin tiers' rule peers resolved once per snapshot and kept up to date change by change,
and each rule's region computed once for every local pod it applies to. Pure.

Why: a rule's region (its peers' addresses x protocols x ports) does not depend on which local
pod it applies to, except through an ingress rule's named ports (they resolve on the local
pod). Matching every rule peer against every cluster pod for every local pod made an admin
edit cost milliseconds per local pod with a few hundred peers, and any pod, namespace or Node
change re-derive every local pod's tiers. Here each (rule peer, direction) keeps its matching
candidates (pods with their namespace's labels, nodes with theirs); a candidate that comes,
goes or changes is tested against the peers in use only, and invalidates only the regions of
the rules whose peers it moved. `agent.calc.incremental` touches only the local pods whose
tiers use those peers; an edit of one policy computes only its own rules' regions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from agent import model
from agent.tiers import compile as tiers_compile
from agent.tiers import evaluate
from agent.tiers import model as tiers

PeerKey = tuple[tiers.Peer, str]  # a rule peer and the direction it is used in
_RegionKey = tuple[tiers.Rule, str, tuple[model.ContainerPort, ...] | None]


def peer_keys(policy: tiers.ClusterPolicy) -> set[PeerKey]:
    """The (peer, direction) pairs a policy's rules use."""
    return {
        *((peer, evaluate.INGRESS) for rule in policy.ingress for peer in rule.peers),
        *((peer, evaluate.EGRESS) for rule in policy.egress for peer in rule.peers),
    }


class Resolver:
    """The possible peers of a snapshot (`set`), each rule peer's members among them, and the
    rules' regions, computed on first use and dropped when a change moves them."""

    def __init__(self, candidates: Mapping[str, tiers_compile.Peer] | None = None) -> None:
        self.candidates: dict[str, tiers_compile.Peer] = dict(candidates or {})
        self._members: dict[PeerKey, dict[str, tiers_compile.Peer]] = {}
        self._regions: dict[_RegionKey, tiers_compile.RuleRegion] = {}
        self._regions_of: dict[PeerKey, set[_RegionKey]] = {}

    def set(self, key: str, candidate: tiers_compile.Peer | None) -> set[PeerKey]:
        """Candidate `key` (a pod or node) was added, changed or (None) removed: the (peer,
        direction) pairs in use whose members or their addresses or container ports moved."""
        old = self.candidates.pop(key, None)
        if candidate is not None:
            self.candidates[key] = candidate
        if old == candidate:
            return set()
        moved: set[PeerKey] = set()
        for peer_key, members in self._members.items():
            peer, direction = peer_key
            was = members.get(key)
            now = candidate is not None and tiers_compile.matches(peer, candidate, direction)
            if now:
                assert candidate is not None
                members[key] = candidate
                if was is not None and _same_facts(was, candidate):
                    continue
            elif was is not None:
                del members[key]
            else:
                continue
            moved.add(peer_key)
        for peer_key in moved:
            for region_key in self._regions_of.pop(peer_key, ()):
                self._regions.pop(region_key, None)
        return moved

    def members(self, peer: tiers.Peer, direction: str) -> Iterable[tiers_compile.Peer]:
        """The candidates `peer` matches in `direction`."""
        found = self._members.get((peer, direction))
        if found is None:
            found = self._members[(peer, direction)] = {
                key: candidate
                for key, candidate in self.candidates.items()
                if tiers_compile.matches(peer, candidate, direction)
            }
        return found.values()

    def region(self, rule: tiers.Rule, pod: model.Pod, direction: str) -> tiers_compile.RuleRegion:
        """`tiers_compile.rule_region` for local pod `pod`, from the cache when it holds it."""
        named = direction == evaluate.INGRESS and any(p.named is not None for p in rule.ports)
        region_key = (rule, direction, pod.container_ports if named else None)
        found = self._regions.get(region_key)
        if found is None:
            found = tiers_compile.rule_region_of(
                rule, pod, direction, lambda peer: self.members(peer, direction)
            )
            self._regions[region_key] = found
            for peer in rule.peers:
                self._regions_of.setdefault((peer, direction), set()).add(region_key)
        return found

    def keep(self, policies: Iterable[tiers.ClusterPolicy]) -> None:
        """Forget the members and regions no rule of `policies` uses any more."""
        rules = {
            (rule, direction)
            for policy in policies
            for direction, ruleset in (
                (evaluate.INGRESS, policy.ingress),
                (evaluate.EGRESS, policy.egress),
            )
            for rule in ruleset
        }
        used = {(peer, direction) for rule, direction in rules for peer in rule.peers}
        self._regions = {k: v for k, v in self._regions.items() if (k[0], k[1]) in rules}
        self._members = {k: v for k, v in self._members.items() if k in used}
        self._regions_of = {
            k: {r for r in v if r in self._regions}
            for k, v in self._regions_of.items()
            if k in used
        }


def _same_facts(was: tiers_compile.Peer, now: tiers_compile.Peer) -> bool:
    """Whether a member still contributes the same to every region: its addresses, and the
    container ports its named ports resolve on."""
    return was.addrs == now.addrs and (
        (was.pod.container_ports if was.pod is not None else None)
        == (now.pod.container_ports if now.pod is not None else None)
    )
