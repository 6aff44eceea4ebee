"""Incremental calculation of the local pods' desired rulesets, in the style of a calculation
graph: selectors are indexed to the memberships they produce, a change becomes a membership
delta, and the delta becomes set-element additions and deletions of exactly the local pods
that refer to the selector. Pure.

Why: with broad peers (a namespaceSelector x podSelector matching thousands of pods) a
recompile of an affected local pod from the whole snapshot canonicalises thousands of
addresses to add or remove one. Here a remote pod's label flip costs a few selector tests and
a canonicalisation of the few elements around its address (`agent.calc.elements`).
Each isolating policy's own elements (its per-policy peers, `ruleset.PolicyPeers`, for the
hit counters) are kept the same way next to the union, from that policy's terms alone.

What is incremental, and what falls back to rebuilding a local pod from the indexes (its terms
bound again, every piece counted again; no snapshot-wide work):
* remote pod added, deleted, relabelled, new IPs or container ports, finished: incremental;
* namespace relabelled, created or deleted: incremental for the selectors; the pods of that
  namespace are re-decorated (mode and node guard read its labels);
* a local pod's own change, a policy edit (the local pods the old or new version selects),
  a change of the agent's own Node: rebuild;
* Services and EndpointSlices, and other Nodes: every local pod's final ruleset is derived
  again from its maintained elements (Service translation and containment run over the
  whole direction, as `desired` does).
* the admin tiers (`agent.tiers`): each rule peer's members and each rule's region are kept
  per snapshot (`agent.tiers.resolve`); a pod, namespace or Node change re-derives only the
  local pods whose tiers use a rule peer it moved, an admin policy edit only the local pods
  the old or new version of the edited policy selects (their entries come from the cache;
  only the edited rules' regions are computed).
A fresh build of a pod's elements (a start, a relist, a rebuild) is shared with every other
fresh build of the same terms until a membership moves: a workload's replicas, and every pod
that one broad policy selects, canonicalise those peers once and hold the same tuples. So is
a patch of shared tuples: when a peer pod moves, the pods that held the same tuples for the
same terms settle the same stretch once and hold the same new tuples again (the rendering's
caches, keyed by the tuples' identity, then format and hash the change once for all of them).
`desired.desired` stays the reference: tests/unit/calc/test_incremental.py compares every
local pod after every step of long random event sequences.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import TypeVar

from agent import model
from agent.calc import compile as calc_compile
from agent.calc import containment, elements, membership, ruleset, terms
from agent.calc import desired as calc_desired
from agent.calc import index as calc_index
from agent.calc import mode as calc_mode
from agent.calc import services as calc_services
from agent.tiers import compile as tiers_compile
from agent.tiers import evaluate as tiers_evaluate
from agent.tiers import model as tiers_model
from agent.tiers import resolve as tiers_resolve

_T = TypeVar("_T")


@dataclasses.dataclass
class _Local:
    """One local pod: its binding, its elements per direction (the union, and each isolating
    policy's own, for its hit counter), its last result."""

    pod: model.Pod
    binding: terms.Binding
    directions: dict[ruleset.Direction, elements.Elements]
    own: dict[tuple[ruleset.Direction, str], elements.Elements]
    result: calc_desired.Desired | None = None
    compiled: ruleset.PodRuleset | None = None  # the result before containment

    def own_of(self, term: terms.Term) -> elements.Elements:
        """The elements of the policy `term` comes from."""
        return self.own[(term.direction, term.policy)]


@dataclasses.dataclass(frozen=True)
class Settings:
    """The agent settings `desired.Cluster` carries besides the snapshot."""

    guard_ports: tuple[ruleset.ProtoPorts, ...] | None = None
    pod_may_loosen_mode: bool = False
    allow_from_widest: tuple[int, int] = containment.WIDEST_ALLOW_FROM
    guard_exempt: tuple[str, ...] = containment.DEFAULT_NODE_GUARD_EXEMPT
    guard_extra: tuple[ruleset.AddrRange, ...] = ()


class Calculator:
    """The desired rulesets of the pods of node `node`, updated change by change: call the
    `set_*` methods, then `flush` for the local pods whose result changed."""

    def __init__(self, node: str, settings: Settings = Settings()) -> None:
        self.node = node
        self.settings = settings
        self.pods: dict[str, model.Pod] = {}
        self.nodes: dict[str, model.Node] = {}
        self.policies: dict[str, model.NetworkPolicy] = {}
        self.policy_index = calc_index.PolicyIndex.build(())
        self.services: dict[str, model.Service] = {}
        self.slices: dict[str, model.EndpointSlice] = {}
        self.service_index = calc_services.EMPTY
        self.memberships = membership.Memberships()
        self.local: dict[str, _Local] = {}
        self.users: dict[terms.Source, dict[str, list[terms.Term]]] = {}
        # Fresh builds of a direction's elements, by recipe (`_recipe`), while no membership
        # moves: pods bound to the same peers share one canonicalisation and its tuples.
        self.built: dict[_BuildKey, _Built] = {}
        self.touched: set[str] = set()  # local pods whose result must be derived again
        self.gone: set[str] = set()  # local pods dropped since the last flush
        self.changed: set[str] = set()  # local pods whose result changed since the last flush
        self.tiers = _Tiers()

    @classmethod
    def of(
        cls,
        node: str,
        settings: Settings = Settings(),
        *,
        pods: Mapping[str, model.Pod],
        namespaces: Mapping[str, model.Namespace],
        policies: Mapping[str, model.NetworkPolicy] = {},
        nodes: Mapping[str, model.Node] = {},
        services: Mapping[str, model.Service] = {},
        slices: Mapping[str, model.EndpointSlice] = {},
        admin: Iterable[tiers_model.ClusterPolicy] = (),
    ) -> Calculator:
        """A calculator of a whole snapshot (a start or a relist): the same as one `set_*`
        per object, without re-indexing the policies after each; every local pod's result is
        derived when first asked for (`desired`) or flushed."""
        calc = cls(node, settings)
        calc.pods, calc.nodes = dict(pods), dict(nodes)
        calc.policies, calc.services, calc.slices = dict(policies), dict(services), dict(slices)
        calc.policy_index = calc_index.PolicyIndex.build(calc.policies.values())
        calc.service_index = calc_services.build_index(services.values(), slices.values())
        calc.tiers.replace(admin)
        for name, namespace in namespaces.items():
            calc.memberships.set_namespace(name, namespace)
        for key, pod in pods.items():
            calc.memberships.set_pod(key, pod)  # no selector in use yet: no delta
        for key, pod in pods.items():
            if calc.is_local(pod):
                calc._rebuild(key)
        calc.forget_changes()  # each pod's result is derived when first asked for
        return calc

    def is_local(self, pod: model.Pod) -> bool:
        """Whether the calculator computes `pod`'s ruleset (it runs on the node, not in the
        host's network)."""
        return pod.node_name == self.node and not pod.host_network

    # -- changes -------------------------------------------------------------------------

    def set_pod(self, key: str, pod: model.Pod | None) -> None:
        """A pod was added, changed or (None) deleted."""
        if pod is None:
            self.pods.pop(key, None)
        else:
            self.pods[key] = pod
        self.built.clear()
        self._apply(self.memberships.set_pod(key, pod))
        self.touched |= self.tiers.moved(
            f"pod/{key}", _pod_candidate(pod, self.memberships.namespaces)
        )
        if pod is not None and self.is_local(pod):
            self._rebuild(key)
        elif key in self.local:
            self._drop(key)

    def set_namespace(self, name: str, namespace: model.Namespace | None) -> None:
        """A namespace was added, relabelled or (None) deleted."""
        self.built.clear()
        self._apply(self.memberships.set_namespace(name, namespace))
        self.touched.update(k for k, s in self.local.items() if s.pod.namespace == name)
        if self.tiers.resolver is not None:  # its pods' namespace labels moved
            namespaces = self.memberships.namespaces
            labels = calc_compile.namespace_labels(name, namespaces)
            for key in list(self.memberships.by_namespace.get(name, {})):
                candidate = _pod_candidate(self.pods.get(key), namespaces, labels)
                self.touched |= self.tiers.moved(f"pod/{key}", candidate)

    def set_admin(self, policies: Iterable[tiers_model.ClusterPolicy]) -> None:
        """The admin policies (every kind, every tier) are now `policies`: the local pods
        that the old or new version of an added, edited or deleted policy selects are derived
        again (a policy's entries exist only in the pods its subject selects)."""
        edited = self.tiers.replace(policies)
        if not edited:
            return
        namespaces = self.memberships.namespaces
        for key, state in self.local.items():
            labels = calc_compile.namespace_labels(state.pod.namespace, namespaces)
            if any(tiers_evaluate.selects(p.subject, state.pod, labels) for p in edited):
                self.touched.add(key)

    def set_policy(self, key: str, policy: model.NetworkPolicy | None) -> None:
        """A NetworkPolicy was added, edited or (None) deleted: rebuild the local pods the old
        or the new version selects."""
        old = self.policies.pop(key, None)
        if policy is not None:
            self.policies[key] = policy
        self.policy_index = calc_index.PolicyIndex.build(self.policies.values())
        for local_key, state in list(self.local.items()):
            versions = (v for v in (old, policy) if v is not None)
            if any(calc_compile.selects(v, state.pod) for v in versions):
                self._rebuild(local_key)

    def set_node(self, name: str, node: model.Node | None) -> None:
        """A Node changed: its addresses feed the node guard of every local pod, and the agent's
        own Node's addresses are admitted on ingress."""
        if node is None:
            self.nodes.pop(name, None)
        else:
            self.nodes[name] = node
        if name == self.node:
            for key in list(self.local):
                self._rebuild(key)
        self.touched.update(self.local)
        self.tiers.moved(f"node/{name}", _node_candidate(node) if node is not None else None)

    def set_service(self, key: str, service: model.Service | None) -> None:
        """A Service changed: every local pod's egress translation is derived again."""
        _put(self.services, key, service)
        self._services_changed()

    def set_slice(self, key: str, piece: model.EndpointSlice | None) -> None:
        """An EndpointSlice changed: as `set_service`."""
        _put(self.slices, key, piece)
        self._services_changed()

    def _services_changed(self) -> None:
        self.service_index = calc_services.build_index(self.services.values(), self.slices.values())
        self.touched.update(self.local)

    # -- results -------------------------------------------------------------------------

    def flush(self) -> dict[str, calc_desired.Desired | None]:
        """The local pods whose desired state changed since the last flush (None: no longer a
        local pod), with their new result."""
        for key in list(self.touched):
            self._update(key)
        out: dict[str, calc_desired.Desired | None] = {key: None for key in self.gone}
        for key in self.changed:
            out[key] = self.local[key].result
        self.gone.clear()
        self.changed.clear()
        self.built = {k: v for k, v in self.built.items() if k[1] is None}  # patches: this round
        return out

    def forget_changes(self) -> None:
        """Drop what `flush` would report (for a caller that asks `desired` pod by pod)."""
        self.gone.clear()
        self.changed.clear()

    def desired(self, key: str) -> calc_desired.Desired:
        """The current result of local pod `key`, brought up to date on demand (a caller may
        ask pod by pod instead of flushing all of them first); a result derived here is the
        caller's to act on, so `flush` does not report it."""
        if key in self.touched:
            self._update(key, report=False)
        result = self.local[key].result
        if result is None:
            raise KeyError(key)
        return result

    def desired_in(
        self, key: str, link: ruleset.Link | None, *, lockdown: bool = False
    ) -> calc_desired.Desired:
        """`desired(key)` for one namespace of the pod, where the scan saw `link` (its
        addresses and gateways: anti-spoofing, node guard), locked down when contested; as
        `desired.desired(pod, cluster, link, lockdown=...)`."""
        result = self.desired(key)
        if link is None and not lockdown:
            return result
        state = self.local[key]
        assert state.compiled is not None
        contained = _contain(self, state.pod, state.compiled, link)
        rs = containment.lockdown(contained.ruleset) if lockdown else contained.ruleset
        return dataclasses.replace(result, ruleset=rs)

    def _update(self, key: str, report: bool = True) -> None:
        """Redo the marked stretches of a touched local pod and derive its result again."""
        self.touched.discard(key)
        state = self.local.get(key)
        if state is None:
            return
        for direction, kept in state.directions.items():
            if kept.dirty:
                _settle(self, kept, state, direction)
        for (direction, policy), kept in state.own.items():
            if kept.dirty:
                _settle(self, kept, state, direction, policy)
        result = self._derive(key, state)
        if result != state.result:
            state.result = result
            if report:
                self.changed.add(key)

    def _derive(self, key: str, state: _Local) -> calc_desired.Desired:
        """The final result from the maintained elements: as `desired.desired` does after
        compiling, Service translation, mode and containment."""
        pod, binding, settings = state.pod, state.binding, self.settings
        built: dict[ruleset.Direction, ruleset.DirectionRuleset] = {}
        for direction, kept in state.directions.items():
            if not binding.isolated[direction]:
                built[direction] = ruleset.DirectionRuleset()
                continue
            keys = binding.policies[direction]
            own = [(key, state.own[(direction, key)]) for key in keys]
            built[direction] = ruleset.DirectionRuleset(
                isolated=True,
                any_port_peers=kept.any_port,
                port_peers=kept.port_peers,
                policies=keys,
                per_policy=tuple(ruleset.PolicyPeers(k, e.any_port, e.port_peers) for k, e in own),
            )
        egress = calc_services.translate(
            built[ruleset.Direction.EGRESS], self.service_index, pod.node_name
        )
        namespaces = self.memberships.namespaces
        mode = calc_mode.resolve(pod, namespaces, settings.pod_may_loosen_mode)
        compiled = ruleset.PodRuleset(
            namespace=pod.namespace,
            pod=pod.name,
            ingress=built[ruleset.Direction.INGRESS],
            egress=egress,
            mode=mode.mode,
        )
        if self.tiers.policies:
            compiled = self.tiers.apply(key, compiled, pod, self)
        state.compiled = compiled
        contained = _contain(self, pod, compiled, None)
        return calc_desired.Desired(contained.ruleset, contained.errors, mode.invalid, mode.refused)

    # -- the graph -----------------------------------------------------------------------

    def _apply(self, deltas: Iterable[membership.Delta]) -> None:
        """Mark, in the local pods that use the source, the addresses a delta moved."""
        for source, was, now in deltas:
            for local_key, used in self.users.get(source, {}).items():
                state = self.local[local_key]
                for term in used:
                    for kept in (state.directions[term.direction], state.own_of(term)):
                        for peer in (was, now):
                            if peer is not None:
                                for a in peer.addrs:
                                    kept.mark(a.family, a.first, a.last)
                self.touched.add(local_key)

    def _rebuild(self, key: str) -> None:
        """Bind local pod `key` again and recompute all its elements (the fallback)."""
        self._drop(key)
        self.gone.discard(key)
        pod = self.pods[key]
        node = self.nodes.get(pod.node_name or "")
        selecting = calc_compile.policies_selecting(pod, self.policy_index.candidates(pod))
        binding = terms.bind(pod, selecting, node.addresses if node is not None else ())
        directions = {d: elements.Elements() for d in ruleset.Direction}
        own = {(d, p): elements.Elements() for d, keys in binding.policies.items() for p in keys}
        self.local[key] = _Local(pod, binding, directions, own)
        for term in binding.terms:
            if term.source is not None:
                self.users.setdefault(term.source, {}).setdefault(key, []).append(term)
                self.memberships.use(term.source)
        for kept in [*directions.values(), *own.values()]:
            kept.mark_all()
        self.touched.add(key)

    def _drop(self, key: str) -> None:
        state = self.local.pop(key, None)
        if state is None:
            return
        for term in state.binding.terms:
            if term.source is None:
                continue
            used = self.users.get(term.source)
            if used is not None:
                used.pop(key, None)
                if not used:
                    del self.users[term.source]
            self.memberships.release(term.source)
        self.tiers.forget(key)
        self.gone.add(key)
        self.touched.discard(key)
        self.changed.discard(key)


# What a term's pieces depend on besides the memberships: not its direction nor its policy.
_Recipe = tuple[
    terms.Source | None,
    tuple[terms.Item, ...],
    tuple[ruleset.AddrRange, ...],
    tuple[ruleset.AddrRange, ...] | None,
]


def _recipe(term: terms.Term) -> _Recipe:
    return (term.source, term.items, term.addrs, term.block)


# A settle's terms, and for a patch the identities of the tuples it started from and the
# stretches it redid (None for a fresh build).
_BuildKey = tuple[
    frozenset[_Recipe], tuple[int, int, tuple[tuple[int, tuple[int, int]], ...]] | None
]


@dataclasses.dataclass(frozen=True, slots=True)
class _Built:
    before: elements.Settled | None  # a patch's starting tuples, kept alive for their ids
    after: elements.Settled


def _settle(
    calc: Calculator,
    kept: elements.Elements,
    state: _Local,
    direction: ruleset.Direction,
    policy: str | None = None,
) -> None:
    """Settle `kept`, shared since the memberships last moved: a fresh build with every other
    fresh build of the same recipe (the replicas of a workload, and every pod that one broad
    policy selects, canonicalise its peers once); a patch with every other patch of the same
    recipe, from the same tuples, over the same stretches."""
    recipe = frozenset(
        _recipe(t)
        for t in state.binding.terms
        if t.direction is direction and (policy is None or t.policy == policy)
    )
    before = None if kept.fresh() else kept.settled()
    key: _BuildKey = (recipe, None)
    if before is not None:
        key = (recipe, (id(before[0]), id(before[1]), tuple(sorted(kept.dirty.items()))))
    found = calc.built.get(key)  # its `before` keeps the ids in a patch's key unique
    if found is not None:
        kept.adopt(found.after)
        return
    kept.settle(_pieces(calc, state, direction, policy))
    calc.built[key] = _Built(before, kept.settled())


def _pieces(
    calc: Calculator, state: _Local, direction: ruleset.Direction, policy: str | None = None
) -> elements.Pieces:
    """What `elements.Elements.settle` asks for: the pieces of one direction of a local pod
    (of one policy of it, when `policy` is given) near a stretch of addresses, from its
    terms and the current memberships."""
    mine = [
        t
        for t in state.binding.terms
        if t.direction is direction and (policy is None or t.policy == policy)
    ]
    fixed = [t for t in mine if t.source is None]
    uses: dict[terms.Source, list[terms.Term]] = {}
    for term in mine:
        if term.source is not None:
            uses.setdefault(term.source, []).append(term)
    memberships = calc.memberships
    # Each source's members, looked up once (hashing a Source hashes its selectors).
    sets = [(source, memberships.members[source], used) for source, used in uses.items()]

    def within(family: int, low: int, high: int) -> list[elements.Piece]:
        out = [piece for term in fixed for piece in terms.pieces(term, None)]
        total = sum(len(members) for _, members, _ in sets)
        if memberships.count_within(family, low, high) * len(sets) < total:
            for peer in memberships.within(family, low, high):  # few pods there
                for _, members, used in sets:
                    if peer.pod.key in members:
                        for term in used:
                            out.extend(terms.pieces(term, peer))
            return out
        for source, members, used in sets:  # most members: their merged addresses
            for term in used:
                plain, named = terms.split(term)
                if plain:
                    merged = memberships.merged(source)
                    out.extend((a, item) for a in merged for item in plain)
                if named is not None:
                    for peer in members.values():
                        out.extend(terms.pieces(named, peer))
        return out

    return within


class _Tiers:
    """The admin policies, the snapshot's possible peers resolved for their rules
    (`agent.tiers.resolve`, built when first needed, kept up to date change by change while
    admin policies exist), and which local pods' tiers use which rule peer."""

    def __init__(self) -> None:
        self.policies: tuple[tiers_model.ClusterPolicy, ...] = ()
        self.resolver: tiers_resolve.Resolver | None = None
        self.users: dict[tiers_resolve.PeerKey, set[str]] = {}  # peer -> local pods
        self.uses: dict[str, set[tiers_resolve.PeerKey]] = {}  # local pod -> peers

    def replace(
        self, policies: Iterable[tiers_model.ClusterPolicy]
    ) -> list[tiers_model.ClusterPolicy]:
        """Replace the policies; the old and new versions of those that changed (added,
        edited, reordered, deleted)."""
        ordered = tuple(sorted(policies, key=lambda p: p.order))
        if ordered == self.policies:
            return []
        old, new = {p.key: p for p in self.policies}, {p.key: p for p in ordered}
        self.policies = ordered
        edited = [
            version
            for key in old.keys() | new.keys()
            if old.get(key) != new.get(key)
            for version in (old.get(key), new.get(key))
            if version is not None
        ]
        if not ordered:
            self.resolver = None
            self.users.clear()
            self.uses.clear()
        elif self.resolver is not None:
            self.resolver.keep(ordered)
        return edited

    def moved(self, key: str, candidate: tiers_compile.Peer | None) -> set[str]:
        """Possible peer `key` ("pod/<ns>/<name>", "node/<name>") is now `candidate`: the
        local pods whose tiers it may have changed."""
        if self.resolver is None:
            return set()
        out: set[str] = set()
        for peer_key in self.resolver.set(key, candidate):
            out.update(self.users.get(peer_key, ()))
        return out

    def apply(
        self, key: str, rs: ruleset.PodRuleset, pod: model.Pod, calc: Calculator
    ) -> ruleset.PodRuleset:
        """`rs` with local pod `key`'s tiers, from the resolved regions."""
        namespaces = calc.memberships.namespaces
        if self.resolver is None:
            self.resolver = tiers_resolve.Resolver(_candidates(calc))
        labels = calc_compile.namespace_labels(pod.namespace, namespaces)
        uses: set[tiers_resolve.PeerKey] = set()
        for policy in self.policies:
            if tiers_evaluate.selects(policy.subject, pod, labels):
                uses |= tiers_resolve.peer_keys(policy)
        self.forget(key)
        self.uses[key] = uses
        for peer_key in uses:
            self.users.setdefault(peer_key, set()).add(key)
        return calc_desired.with_tiers(
            rs, pod, self.policies, namespaces, (), regions=self.resolver.region
        )

    def forget(self, key: str) -> None:
        """Local pod `key` no longer uses any peer (it is gone, or its uses are recorded
        again)."""
        for peer_key in self.uses.pop(key, ()):
            users = self.users.get(peer_key)
            if users is not None:
                users.discard(key)
                if not users:
                    del self.users[peer_key]


def _candidates(calc: Calculator) -> dict[str, tiers_compile.Peer]:
    """Every possible admin-tier peer of the calculator's snapshot, by key (the pods of a
    namespace share one dict of its labels)."""
    out: dict[str, tiers_compile.Peer] = {}
    namespaces = calc.memberships.namespaces
    for namespace, pods in calc.memberships.by_namespace.items():
        labels = calc_compile.namespace_labels(namespace, namespaces)
        for key, peer in pods.items():
            out[f"pod/{key}"] = tiers_compile.Peer(peer.addrs, peer.pod, labels)
    for name, node in calc.nodes.items():
        out[f"node/{name}"] = _node_candidate(node)
    return out


def _pod_candidate(
    pod: model.Pod | None,
    namespaces: Mapping[str, model.Namespace],
    labels: Mapping[str, str] | None = None,
) -> tiers_compile.Peer | None:
    """The pod as an admin-tier peer (None when it cannot be one); `labels`: its namespace's,
    when the caller has them."""
    peer = calc_compile.peer_pod(pod) if pod is not None else None
    if peer is None:
        return None
    if labels is None:
        labels = calc_compile.namespace_labels(peer.pod.namespace, namespaces)
    return tiers_compile.Peer(peer.addrs, peer.pod, labels)


def _node_candidate(node: model.Node) -> tiers_compile.Peer:
    return tiers_compile.Peer(calc_compile.node_ranges(node.addresses), node_labels=node.labels)


def _put(into: dict[str, _T], key: str, value: _T | None) -> None:
    if value is None:
        into.pop(key, None)
    else:
        into[key] = value


def _contain(
    calc: Calculator, pod: model.Pod, compiled: ruleset.PodRuleset, link: ruleset.Link | None
) -> containment.Contained:
    """Containment over a compiled ruleset, with the calculator's snapshot and settings."""
    settings = calc.settings
    return containment.contain(
        compiled,
        pod,
        calc.memberships.namespaces.get(pod.namespace),
        calc.nodes.values(),
        settings.guard_ports,
        settings.allow_from_widest,
        settings.guard_exempt,
        link=link,
        guard_extra=settings.guard_extra,
    )
