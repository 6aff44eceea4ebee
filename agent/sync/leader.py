"""Policy status with one writer: node reports, Lease leader election, policy Events.

Why: every agent sees every policy, so if each posted the Warning about a bad policy, N nodes
would give N Events. Instead:
* every agent publishes which policies it has programmed (its node's report: a Lease
  `podseg-node-<node>` with the annotation `podseg.io/realized`, a JSON map of policy key to
  the resourceVersion programmed for every local pod the policy selects);
* the agents elect one leader with the Lease `podseg-policy-status` (agent.k8s.lease);
* only the leader reads the reports, computes the status of every policy
  (agent.calc.policystatus) and posts the Warning Events `InvalidPolicy` and `NoPodsSelected`,
  each once per policy version and under a fixed name, so a new leader re-posting after a
  failover is refused by the API server (AlreadyExists) rather than duplicated.
Nothing here touches enforcement: an API failure is logged and retried at the next step.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

import structlog

from agent import config, metrics, store
from agent.calc import policystatus
from agent.k8s import events, lease, rest
from agent.sync import pod as sync_pod
from agent.tiers import convert as tiers_convert
from agent.tiers import model as tiers

log = structlog.get_logger(__name__)

ELECTION_LEASE = "podseg-policy-status"
NODE_LEASE_PREFIX = "podseg-node-"
ROLE_LABEL = "podseg.io/lease"
NODE_ROLE = "node"
REALIZED_ANNOTATION = "podseg.io/realized"
MAX_REPORT_BYTES = 200_000  # well under the API server's 256 KiB annotation limit


def node_lease_name(node: str) -> str:
    return NODE_LEASE_PREFIX + node


# Events about cluster-scoped objects go to `default`, where `kubectl describe` looks for them.
CLUSTER_EVENTS_NAMESPACE = "default"
ADMIN_API_VERSIONS = {
    tiers.CLUSTER_NETWORK_POLICY: "policy.networking.k8s.io/v1alpha2",
    tiers.ADMIN_NETWORK_POLICY: "policy.networking.k8s.io/v1alpha1",
    tiers.BASELINE_ADMIN_NETWORK_POLICY: "policy.networking.k8s.io/v1alpha1",
}


def event_name(policy: str, reason: str, resource_version: str) -> str:
    """The fixed name of a policy Event: one per (policy, reason, version) cluster-wide."""
    digest = hashlib.sha256(f"{policy}\0{reason}\0{resource_version}".encode()).hexdigest()
    name = policy.partition("/")[2][:200]
    return f"{name}.podseg-{reason.lower()}-{digest[:12]}"


def parse_report(item: dict[str, Any]) -> tuple[str, dict[str, str]] | None:
    """(node, {policy: resourceVersion}) of a node Lease; None when it is not a readable one
    (logged by the caller's count, never fatal)."""
    meta = item.get("metadata") if isinstance(item.get("metadata"), dict) else None
    spec = item.get("spec") if isinstance(item.get("spec"), dict) else None
    if meta is None or spec is None or not isinstance(spec.get("holderIdentity"), str):
        return None
    try:
        raw = json.loads((meta.get("annotations") or {}).get(REALIZED_ANNOTATION, "{}"))
    except (TypeError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    report = {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)}
    return spec["holderIdentity"], report


class PolicyStatusWriter:
    """The agent's part: publish its node's report, stand for election, write when leading."""

    def __init__(
        self,
        settings: config.Settings,
        api: rest.Api,
        cluster: store.Store,
        pods: dict[str, sync_pod.PodState],
        recorder: events.Recorder,
    ) -> None:
        self.settings, self.api, self.store, self.pods = settings, api, cluster, pods
        self.recorder = recorder
        self.namespace = settings.lease_namespace
        self.elector = lease.Elector(
            api, self.namespace, ELECTION_LEASE, settings.node_name, settings.lease_duration
        )
        self._published: tuple[str, float] | None = None  # (report text, monotonic time)
        self.statuses: list[policystatus.PolicyStatus] = []

    async def run(self) -> None:
        period = max(self.settings.lease_duration / 3, 0.2)
        while True:
            if self.store.in_sync:
                try:
                    await asyncio.to_thread(self.step)
                except Exception as exc:  # API trouble: retry next step, never crash
                    metrics.API_ERRORS.labels("leases").inc()
                    log.warning("policy_status_step_failed", error=str(exc))
            leading = self.elector.leading
            metrics.POLICY_STATUS_LEADER.set(1 if leading else 0)
            if not leading:  # only the writer exports the cluster-wide counts
                metrics.POLICIES_SELECTING_NOTHING.set(0)
                metrics.POLICIES_NOT_REALIZED.set(0)
            await asyncio.sleep(period)

    def release(self) -> None:
        """On shutdown (blocking): hand the leadership over at once."""
        try:
            self.elector.release()
        except Exception as exc:
            log.warning("policy_status_release_failed", error=str(exc))
        metrics.POLICY_STATUS_LEADER.set(0)

    def step(self) -> None:
        """One round (blocking: runs in a thread)."""
        self.publish()
        was = self.elector.leading
        leading = self.elector.step()
        if leading != was:
            log.info("policy_status_leader" if leading else "policy_status_follower")
        if leading:
            self.lead()

    def publish(self) -> None:
        """Write this node's report when it changed, or to renew it once per duration."""
        programmed = {
            key: (
                (*s.ruleset.ingress.policies, *s.ruleset.egress.policies)
                if s.ruleset is not None and s.state is sync_pod.Status.ENFORCED
                else None
            )
            for key, s in list(self.pods.items())
        }
        local = [p for p in self.store.pods.values() if p.node_name == self.settings.node_name]
        report = policystatus.realized_on_node(self.store.policies.values(), local, programmed)
        text = json.dumps(report, sort_keys=True, separators=(",", ":"))
        if len(text) > MAX_REPORT_BYTES:
            log.warning("node_report_too_large", policies=len(report), bytes=len(text))
            text = "{}"
        now = time.monotonic()
        last = self._published
        if last is not None and last[0] == text and now - last[1] < self.settings.lease_duration:
            return
        name = node_lease_name(self.settings.node_name)
        current = lease.get(self.api, self.namespace, name)
        spec = {
            "holderIdentity": self.settings.node_name,
            "leaseDurationSeconds": self.settings.lease_duration,
            "renewTime": lease.micro_time(),
        }
        rv = (current or {}).get("metadata", {}).get("resourceVersion")
        body = lease.body(
            self.namespace,
            name,
            spec,
            labels={ROLE_LABEL: NODE_ROLE},
            annotations={REALIZED_ANNOTATION: text},
            resource_version=rv,
        )
        lease.write(self.api, self.namespace, body, create=current is None)
        self._published = (text, now)

    def lead(self) -> None:
        """Compute every policy's status from the node reports; post what needs saying."""
        reports: dict[str, dict[str, str]] = {}
        for item in lease.list_labelled(self.api, self.namespace, f"{ROLE_LABEL}={NODE_ROLE}"):
            parsed = parse_report(item)
            if parsed is None:
                log.warning("node_report_unreadable", lease=item.get("metadata", {}).get("name"))
                continue
            reports[parsed[0]] = parsed[1]
        policies = dict(self.store.policies)
        self.statuses = policystatus.compute(
            policies.values(), self.store.pods.values(), self.store.namespaces, reports
        )
        metrics.POLICIES_SELECTING_NOTHING.set(sum(s.selected_pods == 0 for s in self.statuses))
        metrics.POLICIES_NOT_REALIZED.set(sum(not s.fully_realized for s in self.statuses))
        for status in self.statuses:
            if status.errors:
                self._warn(status, "InvalidPolicy", _invalid_message(status))
            if status.selected_pods == 0:
                self._warn(status, "NoPodsSelected", "this NetworkPolicy selects no running pod")
        self.warn_admin(self.store.admin_policies())

    def warn_admin(self, policies: list[tiers.ClusterPolicy]) -> None:
        """Warning Events about admin policies: invalid parts, and a tier and priority shared
        with another. They are cluster-scoped: the Events live in `default`."""
        conflicts = tiers_convert.priority_conflicts(policies)
        for policy in policies:
            if policy.errors:
                message = "podseg ignores invalid parts (they match nothing): "
                self._warn_admin(policy, "InvalidPolicy", message + "; ".join(policy.errors))
            if policy.key in conflicts:
                self._warn_admin(policy, "PriorityConflict", conflicts[policy.key])

    def _warn_admin(self, policy: tiers.ClusterPolicy, reason: str, message: str) -> None:
        self.recorder.warn(
            kind=policy.kind,
            api_version=ADMIN_API_VERSIONS[policy.kind],
            namespace=CLUSTER_EVENTS_NAMESPACE,
            object_namespace="",
            name=policy.name,
            resource_version=policy.resource_version,
            reason=reason,
            message=message,
            event_name=event_name(policy.key, reason, policy.resource_version),
            blocking=True,
        )

    def _warn(self, status: policystatus.PolicyStatus, reason: str, message: str) -> None:
        self.recorder.warn(
            kind="NetworkPolicy",
            api_version="networking.k8s.io/v1",
            namespace=status.namespace,
            name=status.name,
            resource_version=status.resource_version,
            reason=reason,
            message=message,
            event_name=event_name(status.key, reason, status.resource_version),
            blocking=True,
        )


def _invalid_message(status: policystatus.PolicyStatus) -> str:
    return "podseg ignores invalid parts (they match nothing): " + "; ".join(status.errors)
