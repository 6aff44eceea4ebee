"""The sync layer without root: a real Reconciler over a real store, against the in-memory
fake dataplane (tests/support/fake_dataplane.py), through every branch of a pod's kernel
state machine: first commit, adoption, drift (removed, edited), incremental patches, a patch
refused after a foreign commit, a vanished namespace, a worker timeout, a refused commit, no
namespace found, quarantine cuts and the dedup of reports."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import structlog

from agent.calc import containment, terms
from agent.calc import desired as calc_desired
from agent.dataplane import protocol
from agent.sync import loop as sync_loop
from agent.sync import pod as sync_pod
from tests.support import cluster as fx
from tests.support.syncnode import ALLOW_FROM_CLIENTS, Node, counter


def test_first_pass_commits_every_local_pod_once_and_is_ready() -> None:
    node = Node()
    node.run()
    assert {s.state for s in node.rec.pods.values()} == {sync_pod.Status.ENFORCED}
    assert node.rec.ready
    for name in ("web-0", "web-1"):
        assert node.fake(name).fingerprint == node.desired(name)
    # one round trip of first-contact glances, one of commits (plus the scan and the sweep)
    commits = [op for op in node.dataplane.ops() if op is protocol.Op.COMMIT]
    assert len(commits) == 2
    node.dataplane.sent.clear()
    node.run()  # nothing changed: nothing sent but the sweep's reads
    assert protocol.Op.COMMIT not in node.dataplane.ops()


def test_a_table_left_by_an_earlier_agent_is_adopted_then_rewritten_once_at_resync() -> None:
    before = Node()
    before.run()
    after = Node()  # a new agent on the same namespaces
    after.dataplane = before.dataplane
    after.rec = sync_loop.Reconciler(fx.settings(), after.store, after.dataplane, after.events)
    before.dataplane.sent.clear()
    after.run()
    assert protocol.Op.COMMIT not in after.dataplane.ops()
    assert all(s.adopted for s in after.rec.pods.values())
    after.dataplane.sent.clear()
    after.run(verify=True)  # vouched for by fingerprint alone until now: rewritten, read back
    assert after.dataplane.ops().count(protocol.Op.APPLY) == 2
    assert not any(s.adopted for s in after.rec.pods.values())
    assert "RulesetDrift" not in after.events.reasons()


def test_removed_tables_are_drift_restored_at_resync() -> None:
    node = Node()
    node.run()
    node.dataplane.drop_tables(node.fake("web-0"))
    node.run(verify=True)
    assert node.events.posted.count(("shop/web-0", "RulesetDrift")) == 1
    assert node.fake("web-0").fingerprint == node.desired("web-0")
    assert node.state("web-0").state is sync_pod.Status.ENFORCED


def test_an_edit_that_keeps_the_fingerprint_is_caught_by_the_rewrite_read_back() -> None:
    node = Node()
    node.run()
    node.dataplane.tamper(node.fake("web-1"))
    node.run(verify=True)
    assert ("shop/web-1", "RulesetDrift") in node.events.posted
    assert "# added behind" not in node.fake("web-1").tables  # rewritten
    untouched = node.fake("web-0")
    assert ("shop/web-0", "RulesetDrift") not in node.events.posted
    assert untouched.fingerprint == node.desired("web-0")


def test_resync_of_untouched_namespaces_reads_only_generations() -> None:
    node = Node()
    node.run()
    node.dataplane.sent.clear()
    node.run(verify=True)
    ops = node.dataplane.ops()
    assert ops.count(protocol.Op.GENERATION) == 2
    assert protocol.Op.INSPECT not in ops and protocol.Op.COMMIT not in ops


def test_a_peer_change_is_a_patch_and_a_foreign_commit_turns_it_into_a_replace() -> None:
    node = Node()
    node.run()
    moved = fx.pod(
        "shop", "client", "198.18.2.2", node="node-2", labels={"role": "client"}, version="2"
    )
    node.dataplane.sent.clear()
    node.run(node.apply(fx.event("pods", "MODIFIED", moved)))
    assert node.dataplane.ops().count(protocol.Op.PATCH) == 2
    assert protocol.Op.COMMIT not in node.dataplane.ops()
    assert node.fake("web-0").fingerprint == node.desired("web-0")
    # Someone else commits in web-1's namespace: the next patch there is refused and the
    # table is replaced whole in the same pass.
    node.dataplane.foreign_commit(node.fake("web-1"))
    refused = counter("podseg_ruleset_updates_total", mode="patch_refused")
    fallbacks = counter("podseg_patch_fallbacks_total", backend="nftables", reason="unvouched")
    again = fx.pod(
        "shop", "client", "198.18.2.3", node="node-2", labels={"role": "client"}, version="3"
    )
    node.dataplane.sent.clear()
    node.run(node.apply(fx.event("pods", "MODIFIED", again)))
    assert counter("podseg_ruleset_updates_total", mode="patch_refused") == refused + 1
    assert (
        counter("podseg_patch_fallbacks_total", backend="nftables", reason="unvouched")
        == fallbacks + 1
    )
    assert node.dataplane.ops().count(protocol.Op.COMMIT) == 1
    for name in ("web-0", "web-1"):
        assert node.fake(name).fingerprint == node.desired(name)


def test_a_remote_flip_is_calculated_incrementally_not_recompiled_from_the_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = Node()
    node.run()
    with monkeypatch.context() as patched:

        def refuse(*_: Any) -> Any:
            raise AssertionError("a remote pod's flip must not recompile a local pod")

        patched.setattr(calc_desired, "desired", refuse)
        patched.setattr(terms, "bind", refuse)
        moved = fx.pod(
            "shop", "client", "198.18.2.2", node="node-2", labels={"role": "client"}, version="2"
        )
        node.run(node.apply(fx.event("pods", "MODIFIED", moved)))
        left = fx.pod("shop", "client", "198.18.2.2", node="node-2", labels={}, version="3")
        node.run(node.apply(fx.event("pods", "MODIFIED", left)))
    for name in ("web-0", "web-1"):
        assert node.fake(name).fingerprint == node.desired(name)
        assert not node.state(name).ruleset.ingress.port_peers  # type: ignore[union-attr]


def test_a_change_that_moves_no_element_plans_no_pod() -> None:
    """A second client on the first one's address joins the peers but allows nothing new: the
    calculator says no local pod changed, so none is rendered (the policy index alone would
    have planned both web pods)."""
    node = Node()
    node.run()
    rendered = node.rendered()
    twin = fx.pod("shop", "twin", "198.18.2.1", node="node-2", labels={"role": "client"})
    node.run(node.apply(fx.event("pods", "ADDED", twin)))
    assert rendered == []
    moved = fx.pod("shop", "twin", "198.18.2.7", node="node-2", labels={"role": "client"})
    node.run(node.apply(fx.event("pods", "MODIFIED", moved)))
    assert sorted(rendered) == ["web-0", "web-1"]
    for name in ("web-0", "web-1"):
        assert node.fake(name).fingerprint == node.desired(name)


def test_every_kind_of_change_through_the_calculator_matches_the_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Passes plan from the calculator alone (`desired.desired` refuses during them), and
    what they program equals the reference after each change."""
    node = Node()
    node.run()

    def refuse(*_: Any) -> Any:
        raise AssertionError("the reconciler must plan from the incremental calculator")

    changes = [
        ("namespaces", fx.namespace("shop", labels={"team": "x"})),
        ("pods", fx.pod("shop", "c2", "198.18.2.9", node="node-2", labels={"role": "client"})),
        (
            "networkpolicies",
            fx.policy(
                "shop",
                "from-clients",
                {
                    "podSelector": {},
                    "ingress": [
                        {
                            "from": [{"namespaceSelector": {"matchLabels": {"team": "x"}}}],
                            "ports": [{"port": 80}],
                        }
                    ],
                },
            ),
        ),
        ("nodes", fx.node("node-1", "198.18.0.2")),
        ("pods", fx.pod("shop", "web-0", "198.18.1.1", labels={"app": "other"}, version="2")),
        ("namespaces", fx.namespace("shop", labels={"team": "y"})),
    ]
    for resource, obj in changes:
        with monkeypatch.context() as patched:
            patched.setattr(calc_desired, "desired", refuse)
            node.run(node.apply(fx.event(resource, "MODIFIED", obj)))
        for name in ("web-0", "web-1"):
            assert node.fake(name).fingerprint == node.desired(name), (resource, name)


def test_a_patch_raced_by_another_commit_is_not_vouched_for_and_is_replaced() -> None:
    node = Node()
    node.run()
    node.fake("web-0").raced = True
    moved = fx.pod(
        "shop", "client", "198.18.2.2", node="node-2", labels={"role": "client"}, version="2"
    )
    node.dataplane.sent.clear()
    node.run(node.apply(fx.event("pods", "MODIFIED", moved)))
    ops = node.dataplane.ops()
    assert ops.count(protocol.Op.PATCH) == 2 and ops.count(protocol.Op.COMMIT) == 1
    assert "# patched" not in node.fake("web-0").tables  # replaced whole after the race
    assert node.fake("web-0").fingerprint == node.desired("web-0")


def test_a_vanished_namespace_fails_only_its_pod_and_it_is_found_again() -> None:
    node = Node()
    node.run()
    node.fake("web-0").gone = True
    policy = fx.policy(
        "shop", "from-clients", {**ALLOW_FROM_CLIENTS, "policyTypes": ["Ingress", "Egress"]}, "2"
    )
    node.run(node.apply(fx.event("networkpolicies", "MODIFIED", policy)))
    assert node.state("web-0").state is sync_pod.Status.UNPROTECTED
    assert node.state("web-0").target is None
    assert node.state("web-1").state is sync_pod.Status.ENFORCED
    assert node.fake("web-1").fingerprint == node.desired("web-1")
    # The pod's namespace comes back (recreated sandbox): found by IP, programmed.
    node.dataplane.add(node.webs[0])
    node.state("web-0").retry_at = 0.0
    node.run()
    assert node.state("web-0").state is sync_pod.Status.ENFORCED


def test_a_worker_timeout_fails_the_batch_and_the_pods_are_retried() -> None:
    node = Node()
    node.run()
    node.dataplane.hang_next = 1  # the commit round trip of the next pass times out
    policy = fx.policy(
        "shop", "from-clients", {**ALLOW_FROM_CLIENTS, "policyTypes": ["Ingress", "Egress"]}, "2"
    )
    node.run(node.apply(fx.event("networkpolicies", "MODIFIED", policy)))
    states = {s.state for s in node.rec.pods.values()}
    assert states == {sync_pod.Status.FAILED}
    assert all(s.retry_at > 0 and s.fingerprint is None for s in node.rec.pods.values())
    for state in node.rec.pods.values():
        state.retry_at = 0.0
    node.run()
    assert {s.state for s in node.rec.pods.values()} == {sync_pod.Status.ENFORCED}
    for name in ("web-0", "web-1"):
        assert node.fake(name).fingerprint == node.desired(name)


def test_a_refused_commit_keeps_the_previous_rules_and_is_retried() -> None:
    node = Node()
    node.run()
    before = node.fake("web-0").fingerprint
    node.dataplane.refuse = True
    policy = fx.policy(
        "shop", "from-clients", {**ALLOW_FROM_CLIENTS, "policyTypes": ["Ingress", "Egress"]}, "2"
    )
    node.run(node.apply(fx.event("networkpolicies", "MODIFIED", policy)))
    assert node.state("web-0").state is sync_pod.Status.FAILED
    assert node.fake("web-0").fingerprint == before
    node.dataplane.refuse = False
    node.state("web-0").retry_at = node.state("web-1").retry_at = 0.0
    node.run()
    assert node.fake("web-0").fingerprint == node.desired("web-0") != before


def test_a_pod_whose_namespace_is_not_found_stays_unprotected_and_is_counted() -> None:
    node = Node()
    node.dataplane.holding(node.webs[1]).gone = True
    missing = counter("podseg_netns_lookup_failures_total")
    node.run()
    assert node.state("web-1").state is sync_pod.Status.UNPROTECTED
    assert counter("podseg_netns_lookup_failures_total") == missing + 1
    assert node.state("web-0").state is sync_pod.Status.ENFORCED
    assert node.state("web-1").failures == 1 and node.state("web-1").retry_at > 0


def test_quarantine_cuts_the_pods_connections_and_is_reported_once() -> None:
    node = Node()
    node.run()
    ns = node.fake("web-0")
    ns.connections = [
        protocol.ConntrackEntry(4, "198.18.2.1", node.webs[0], 6, 4000, 80, 0, "k1"),
        protocol.ConntrackEntry(4, "127.0.0.1", "127.0.0.1", 6, 1, 2, 0, "lo"),
    ]
    labels = {"app": "web", containment.QUARANTINE_LABEL: "true"}
    caught = fx.pod("shop", "web-0", node.webs[0], labels=labels, version="2")
    node.run(node.apply(fx.event("pods", "MODIFIED", caught)))
    assert node.events.posted.count(("shop/web-0", "Quarantined")) == 1
    assert [e.key for e in ns.connections] == ["lo"]  # the pod's connection is cut
    assert node.state("web-0").quarantined_since is not None
    freed = fx.pod("shop", "web-0", node.webs[0], labels={"app": "web"}, version="3")
    node.run(node.apply(fx.event("pods", "MODIFIED", freed)))
    assert node.events.posted.count(("shop/web-0", "QuarantineLifted")) == 1
    assert node.state("web-0").quarantined_since is None


def test_an_invalid_policy_is_reported_once_per_version_and_forgotten_when_gone() -> None:
    node = Node()
    bad = fx.policy(
        "shop",
        "bad",
        {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "not-a-cidr"}}]}]},
    )
    node.run(node.apply(fx.event("networkpolicies", "ADDED", bad)))
    node.run(node.apply(fx.event("networkpolicies", "MODIFIED", bad)))
    # logged and counted here; the Event comes from the one policy-status writer instead
    assert node.events.posted.count(("shop/bad", "InvalidPolicy")) == 0
    assert ("shop/bad", "1") in node.rec.reporter._policies
    node.run(node.apply(fx.event("networkpolicies", "DELETED", bad)), verify=True)
    assert not node.rec.reporter._policies  # pruned with the policy


def test_the_pass_log_line_tells_the_placing_apart_from_the_compile() -> None:
    node = Node()
    with structlog.testing.capture_logs() as logs:
        asyncio.run(node.rec.reconcile(None, since=time.monotonic(), kind="pod_ip"))
    (line,) = [e for e in logs if e["event"] == "reconcile_committed"]
    assert line["pods"] == 2
    # the first pass scans the namespaces to place its pods: part of its compile
    assert 0 < line["place_ms"] <= line["compile_ms"]
