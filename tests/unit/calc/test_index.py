"""The calc indexes: namespace relabels recompile only dependent pods; the incrementally updated
peer index (with label buckets and memoised peers) compiles exactly like a full rebuild."""

from __future__ import annotations

import dataclasses
import random

from agent import model
from agent.calc import affected, intervals
from agent.calc import compile as calc_compile
from agent.calc import index as calc_index
from tests.support import randomcluster as rc


def test_namespace_relabel_affects_a_superset_of_what_changed() -> None:
    rnd = random.Random(99)
    narrowed = 0
    for _ in range(300):
        namespaces = {
            f"ns{i}": model.Namespace(f"ns{i}", {"team": rnd.choice(("t1", "t2"))})
            for i in range(3)
        }
        pods = {p.key: p for p in (rc.pod(rnd, i) for i in range(12))}
        policies = {p.key: p for p in (rc.policy(rnd, i) for i in range(4))}
        before = rc.compile_all(pods, policies, namespaces)
        name = rnd.choice(list(namespaces))
        old = namespaces[name]
        labels = dict(old.labels)
        if rnd.random() < 0.7:
            labels["team"] = "t2" if labels.get("team") == "t1" else "t1"
        else:
            labels.pop("team", None)
        new_namespaces = dict(namespaces)
        new_namespaces[name] = dataclasses.replace(old, labels=labels)
        after = rc.compile_all(pods, policies, new_namespaces)
        local = {k: p for k, p in pods.items() if p.node_name == "node-1" and not p.host_network}
        result = affected.affected(
            local,
            policies.values(),
            new_namespaces,
            affected.Changes(
                {}, {}, namespaces_changed=True, namespaces={name: (old, new_namespaces[name])}
            ),
        )
        changed = {k for k in after if before.get(k) != after[k]}
        assert result is not None
        assert changed <= result, changed - result
        narrowed += len(result) < len(local)
    assert narrowed > 50
    # created or deleted namespaces: everything, as before
    created = affected.Changes(
        {}, {}, namespaces_changed=True, namespaces={"n": (None, model.Namespace("n"))}
    )
    assert affected.affected({}, [], {}, created) is None


def test_updated_index_compiles_like_a_full_rebuild() -> None:
    rnd = random.Random(5)
    namespaces = {f"ns{i}": model.Namespace(f"ns{i}", {"team": f"t{i % 2 + 1}"}) for i in range(3)}
    pods = {p.key: p for p in (rc.pod(rnd, i) for i in range(30))}
    index = calc_compile.build_index(namespaces, pods.values())
    for step in range(200):
        policies = [rc.policy(rnd, i) for i in range(4)]
        changed: set[str] = set()
        for _ in range(rnd.randrange(1, 4)):
            if rnd.random() < 0.3 and pods:
                key = rnd.choice(sorted(pods))
                del pods[key]
            else:
                pod = dataclasses.replace(rc.pod(rnd, rnd.randrange(40)), name=f"p{step}")
                if rnd.random() < 0.5:
                    pod = dataclasses.replace(pod, name=rnd.choice(sorted(pods)).split("/")[1])
                key = pod.key
                pods[key] = pod
            changed.add(key)
        # warm the caches of the old index the way a pass does, then update it
        for pod in list(pods.values())[:5]:
            calc_compile.compile_indexed(pod, policies, index)
        index = calc_compile.update_index(index, namespaces, pods, changed)
        fresh = calc_compile.build_index(namespaces, pods.values())
        assert index.by_namespace == fresh.by_namespace
        assert sorted(index.peers, key=lambda p: p.pod.key) == sorted(
            fresh.peers, key=lambda p: p.pod.key
        )
        for pod in pods.values():
            assert calc_compile.compile_indexed(pod, policies, index) == (
                calc_compile.compile_indexed(pod, policies, fresh)
            )


def test_policy_index_candidates_include_every_selecting_policy() -> None:
    rnd = random.Random(11)
    checked = 0
    for _ in range(100):
        policies = [rc.policy(rnd, i) for i in range(12)]
        pods = [rc.pod(rnd, i) for i in range(12)]
        index = calc_index.PolicyIndex.build(policies)
        for pod in pods:
            candidates = index.candidates(pod)
            selecting = {p.key for p in policies if calc_compile.selects(p, pod)}
            assert selecting <= {p.key for p in candidates}
            assert all(p.namespace == pod.namespace for p in candidates)
            checked += len(selecting)
    assert checked > 100


def test_affected_through_the_policy_index_equals_the_scan() -> None:
    rnd = random.Random(21)
    for _ in range(200):
        namespaces = {f"ns{i}": model.Namespace(f"ns{i}", {"team": "t1"}) for i in range(3)}
        pods = {p.key: p for p in (rc.pod(rnd, i) for i in range(12))}
        policies = [rc.policy(rnd, i) for i in range(6)]
        key = rnd.choice(sorted(pods))
        new = dataclasses.replace(pods[key], labels=rc.pod(rnd, 0).labels)
        local = {k: p for k, p in pods.items() if p.node_name == "node-1" and not p.host_network}
        changes = affected.Changes(pods={key: (pods[key], new)}, policies={})
        index = calc_index.PolicyIndex.build(policies)
        assert affected.affected(
            local, policies, namespaces, changes, policies_for=index.candidates
        ) == affected.affected(local, policies, namespaces, changes)


def test_updated_index_carries_only_resolved_peers_that_still_hold() -> None:
    """Resolved peers survive an update unless it can change them (a pod of a
    namespace they read, or any namespace change). Fixed policies, so memos do carry over;
    every carried memo equals a fresh resolution and every pod compiles as from scratch."""
    rnd = random.Random(17)
    namespaces = {f"ns{i}": model.Namespace(f"ns{i}", {"team": f"t{i % 2 + 1}"}) for i in range(3)}
    pods = {p.key: p for p in (rc.pod(rnd, i) for i in range(30))}
    policies = [rc.policy(rnd, i) for i in range(10)]
    index = calc_compile.build_index(namespaces, pods.values())
    carried = dropped = 0
    for step in range(100):
        for pod in pods.values():  # a pass resolves every peer of these policies
            calc_compile.compile_indexed(pod, policies, index)
        resolved = {k for k in index.cache if k[0] == "peer"}
        if rnd.random() < 0.15:
            namespaces = dict(namespaces)
            name = rnd.choice(sorted(namespaces))
            labels = {"team": rnd.choice(("t1", "t2"))}
            namespaces[name] = dataclasses.replace(namespaces[name], labels=labels)
        changed: set[str] = set()
        for _ in range(rnd.randrange(0, 3)):
            pod = dataclasses.replace(rc.pod(rnd, rnd.randrange(40)), name=f"p{step % 35}")
            if rnd.random() < 0.2 and pod.key in pods:
                del pods[pod.key]
            else:
                pods[pod.key] = pod
            changed.add(pod.key)
        index = calc_compile.update_index(index, namespaces, pods, changed)
        fresh = calc_compile.build_index(namespaces, pods.values())
        kept = {k for k in index.cache if k[0] == "peer"}
        carried += len(kept)
        dropped += len(resolved - kept)
        for _, policy_namespace, peer in kept:
            owner = next(p for p in policies if p.namespace == policy_namespace)
            assert index.cache[("peer", policy_namespace, peer)][0] == (
                calc_compile._resolve_peer_uncached(owner, peer, fresh)
            )
        for pod in pods.values():
            assert calc_compile.compile_indexed(pod, policies, index) == (
                calc_compile.compile_indexed(pod, policies, fresh)
            )
    assert carried > 200 and dropped > 200  # both paths are exercised


def test_first_peer_pod_of_a_namespace_reaches_a_memoised_namespace_selector() -> None:
    """A namespace that held no peer pod gets one: a namespaceSelector resolved before must
    see it after the update (its memo of matching namespaces is not carried over)."""
    namespaces = {n: model.Namespace(n, {"team": "t1"}) for n in ("ns0", "ns1")}

    def pod(namespace: str, name: str, ip: str, node: str = "node-2") -> model.Pod:
        return model.Pod(namespace, name, labels={}, node_name=node, ips=(ip,), phase="Running")

    local = pod("ns0", "local", "198.18.1.1", node="node-1")
    pods = {p.key: p for p in (local, pod("ns0", "a", "198.18.1.2"))}
    team = model.LabelSelector((("team", "t1"),))
    policy = model.NetworkPolicy(
        "ns0",
        "from-team",
        ingress=(model.PolicyRule(peers=(model.Peer(namespace_selector=team),)),),
    )
    index = calc_compile.build_index(namespaces, pods.values())
    before = calc_compile.compile_indexed(local, [policy], index)
    newcomer = pod("ns1", "b", "198.18.1.3")
    pods[newcomer.key] = newcomer
    index = calc_compile.update_index(index, namespaces, pods, {newcomer.key})
    after = calc_compile.compile_indexed(local, [policy], index)
    fresh = calc_compile.compile_indexed(
        local, [policy], calc_compile.build_index(namespaces, pods.values())
    )
    assert after == fresh and after != before
    assert intervals.contains(
        after.ingress.any_port_peers, 4, intervals.address_range("198.18.1.3").first
    )


def test_memoised_peers_unused_for_many_updates_are_dropped() -> None:
    """Memos are keyed by peer values that policy edits leave behind: one unused for
    `_UNUSED_UPDATES` updates goes, one in use stays (the cache stays bounded)."""
    namespaces = {n: model.Namespace(n, {"team": "t1"}) for n in ("ns0", "ns1")}
    local = model.Pod("ns0", "local", node_name="node-1", ips=("198.18.1.1",), phase="Running")
    other = model.Pod("ns1", "other", node_name="node-2", ips=("198.18.1.2",), phase="Running")
    pods = {p.key: p for p in (local, other)}
    team = model.LabelSelector((("team", "t1"),))
    used = model.NetworkPolicy(
        "ns0", "used", ingress=(model.PolicyRule(peers=(model.Peer(pod_selector=team),)),)
    )
    forgotten = model.NetworkPolicy(
        "ns0",
        "edited-away",
        ingress=(model.PolicyRule(peers=(model.Peer(namespace_selector=team),)),),
    )
    index = calc_compile.build_index(namespaces, pods.values())
    calc_compile.compile_indexed(local, [used, forgotten], index)
    peer_keys = {k for k in index.cache if isinstance(k, tuple) and k[0] in ("peer", "namespaces")}
    assert len(peer_keys) == 3
    for _ in range(calc_compile._UNUSED_UPDATES + 2):
        index = calc_compile.update_index(index, namespaces, pods, ())
        calc_compile.compile_indexed(local, [used], index)
    kept = {k for k in index.cache if isinstance(k, tuple) and k[0] in ("peer", "namespaces")}
    assert kept == {("peer", "ns0", used.ingress[0].peers[0])}
