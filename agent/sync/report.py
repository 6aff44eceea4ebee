"""What the sync layer tells operators: log lines, Kubernetes Events and metrics about bad
input and about what happened to a pod's rules (drift, quarantine).

Why one place: each report is deduplicated (an invalid policy is reported once per version,
not once per pass), and the dedup memory is pruned when the objects are gone, so a
long-running agent neither repeats itself nor grows with every object it has ever seen.
"""

from __future__ import annotations

import collections
import datetime
from collections.abc import Collection, Iterable, Sequence
from typing import Protocol

import structlog

from agent import metrics, model
from agent.calc import mode as calc_mode
from agent.calc import ruleset
from agent.calc import services as calc_services
from agent.dataplane.nft import render as render_nft
from agent.sync import pod as sync_pod
from agent.tiers import convert as tiers_convert
from agent.tiers import model as tiers

log = structlog.get_logger(__name__)


class Recorder(Protocol):
    """Posts Kubernetes Events (`agent.k8s.events.Recorder`; tests keep them in memory)."""

    def on_pod(
        self, pod: model.Pod, *, reason: str, message: str, event_type: str = "Warning"
    ) -> None: ...

    def warn(
        self,
        *,
        kind: str,
        api_version: str,
        namespace: str,
        name: str,
        resource_version: str,
        reason: str,
        message: str,
        event_type: str = "Warning",
    ) -> None: ...


_IN_OUTPUT = "denied egress is dropped in the output hook while they are there (EPERM)"
_SILENT_AGAIN = "denied egress is dropped silently in the device hook again"


def iso(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).isoformat(timespec="milliseconds")


def committed(plan: sync_pod.Plan, since: float | None, trigger: str) -> float | None:
    """A pod's committed ruleset: metrics and its log line; the latency from the first event
    of the pass's batch (None without one)."""
    rs, rendered = plan.rs, plan.rendered
    metrics.RULESET_UPDATES.labels(plan.mode.value).inc()
    metrics.APPLY_SECONDS.observe(plan.apply_seconds)
    metrics.APPLIES.inc()
    latency = None
    if since is not None:
        latency = plan.committed_at - since
        metrics.POLICY_PROGRAMMING_SECONDS.labels(trigger or "unknown").observe(latency)
    plan.bound.info(
        plan.event,
        fingerprint=rendered.fingerprint,
        ingress_isolated=rs.ingress.isolated,
        egress_isolated=rs.egress.isolated,
        policy_mode=rs.mode.value,
        policies=sorted(set(rs.ingress.policies) | set(rs.egress.policies)),
        quarantined=rs.quarantine is not None,
        node_guard=rs.node_guard is not None,
        anti_spoofing=rs.anti_spoof is not None,
        netns=plan.slot.target.path,
        lockdown=plan.slot.lockdown,
        apply_ms=round(plan.apply_seconds * 1000, 3),
        mode=plan.mode.value,
        latency_ms=round(latency * 1000, 3) if latency is not None else None,
        trigger=trigger,
    )
    return latency


class Reporter:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self._policies: set[tuple[str, str]] = set()  # (policy key, resourceVersion)
        self._services: set[tuple[str, str, str, str]] = set()
        self._modes: set[tuple[str, str]] = set()  # (pod key, invalid value)
        self._admin: set[tuple[str, str, str]] = set()  # (policy key, resourceVersion, problem)
        self._admin_seen: tuple[tuple[str, str], ...] = ()  # (key, version) last logged

    def prune(
        self,
        pods: Collection[str],
        policies: Collection[str],
        services: Collection[str],
    ) -> None:
        """Forget what was reported about objects that are gone (keys of live objects)."""
        self._policies = {m for m in self._policies if m[0] in policies}
        self._services = {m for m in self._services if m[1] in services}
        self._modes = {m for m in self._modes if m[0] in pods}

    # -- input problems ---------------------------------------------------------------------
    def invalid_policies(self, policies: Iterable[model.NetworkPolicy]) -> None:
        """Each policy with invalid parts: a log line once per version; the per-namespace
        gauge always. The Warning Event comes from the one policy-status writer
        (agent.sync.leader), not from every node."""
        per_namespace: collections.Counter[str] = collections.Counter()
        for policy in policies:
            if not policy.errors:
                continue
            per_namespace[policy.namespace] += 1
            marker = (policy.key, policy.resource_version)
            if marker in self._policies:
                continue
            self._policies.add(marker)
            log.warning(
                "policy_invalid_parts",
                policy=policy.name,
                namespace=policy.namespace,
                errors=list(policy.errors),
                effect="invalid parts match nothing; valid parts are enforced",
            )
        metrics.INVALID_POLICIES.clear()
        for namespace, count in per_namespace.items():
            metrics.INVALID_POLICIES.labels(namespace).set(count)

    def admin_policies(self, policies: Sequence[tiers.ClusterPolicy]) -> None:
        """The admin policies in effect (an info line when they change), each with invalid parts
        or sharing its tier and priority with another (a warning once per version), and the
        per-kind and per-tier gauges. Events come from the policy-status writer."""
        seen = tuple((p.key, p.resource_version) for p in policies)
        if seen != self._admin_seen:
            self._admin_seen = seen
            log.info(
                "admin_policies",
                count=len(policies),
                policies=[p.key for p in policies[:50]],
            )
        conflicts = tiers_convert.priority_conflicts(list(policies))
        live = {p.key for p in policies}
        self._admin = {m for m in self._admin if m[0] in live}
        invalid: collections.Counter[str] = collections.Counter()
        conflicting: collections.Counter[str] = collections.Counter()
        for policy in policies:
            problems = []
            if policy.errors:
                invalid[policy.kind] += 1
                problems.append(("admin_policy_invalid_parts", "; ".join(policy.errors)))
            if policy.key in conflicts:
                conflicting[policy.tier] += 1
                problems.append(("admin_policy_priority_conflict", conflicts[policy.key]))
            for event, problem in problems:
                marker = (policy.key, policy.resource_version, problem)
                if marker in self._admin:
                    continue
                self._admin.add(marker)
                log.warning(
                    event,
                    kind=policy.kind,
                    policy=policy.name,
                    tier=policy.tier,
                    priority=policy.priority,
                    problem=problem,
                    effect=(
                        "invalid parts match nothing; valid parts are enforced"
                        if event == "admin_policy_invalid_parts"
                        else "enforced; ordered by kind and name among equals"
                    ),
                )
        for kind in (
            tiers.CLUSTER_NETWORK_POLICY,
            tiers.ADMIN_NETWORK_POLICY,
            tiers.BASELINE_ADMIN_NETWORK_POLICY,
        ):
            metrics.INVALID_ADMIN_POLICIES.labels(kind).set(invalid[kind])
        for tier in tiers.TIERS:
            metrics.ADMIN_PRIORITY_CONFLICTS.labels(tier).set(conflicting[tier])

    def service_problems(self, index: calc_services.ServiceIndex) -> None:
        """Each bad Service/EndpointSlice input once per object version, counted."""
        for problem in index.problems:
            marker = (problem.kind, problem.key, problem.resource_version, problem.message)
            if marker in self._services:
                continue
            self._services.add(marker)
            metrics.SERVICE_INPUT_PROBLEMS.labels(problem.kind).inc()
            namespace, _, name = problem.key.partition("/")
            log.warning(
                "service_input_ignored",
                kind=problem.kind,
                namespace=namespace,
                name=name,
                problem=problem.message,
                effect="opens nothing by itself; backends count only by address and port",
            )

    def mode_label(self, pod: model.Pod, invalid: str | None, refused: str | None) -> None:
        """A `podseg.io/mode` label that is neither mode (enforce applies), or a pod label
        refused because it would loosen the namespace's mode; each once per value."""
        if invalid is not None and (pod.key, invalid) not in self._modes:
            self._modes.add((pod.key, invalid))
            metrics.INVALID_MODE_LABELS.inc()
            log.warning(
                "invalid_mode_label",
                pod=pod.name,
                namespace=pod.namespace,
                label=calc_mode.LABEL,
                value=invalid,
                effect="enforce (the default) applies",
            )
        if refused is not None and (pod.key, f"refused:{refused}") not in self._modes:
            self._modes.add((pod.key, f"refused:{refused}"))
            metrics.REFUSED_MODE_LABELS.inc()
            log.warning(
                "pod_mode_label_refused",
                pod=pod.name,
                namespace=pod.namespace,
                label=calc_mode.LABEL,
                value=refused,
                effect="a pod label may only make its namespace's mode stricter; "
                "the namespace's mode applies (--allow-pod-visibility changes this)",
            )
            self.recorder.on_pod(
                pod,
                reason="PodModeLabelRefused",
                message=f"podseg ignores {calc_mode.LABEL}={refused} on this pod: only the "
                "namespace may loosen enforcement; the namespace's mode applies",
            )

    def containment_errors(
        self,
        pod: model.Pod,
        before: tuple[str, ...],
        errors: tuple[str, ...],
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        """A bad forensic annotation never lifts a quarantine; say why once per change."""
        if errors == before or not errors:
            return
        bound.warning(
            "quarantine_annotation_invalid",
            errors=list(errors),
            effect="quarantine applies; invalid entries are ignored",
        )
        self.recorder.on_pod(
            pod,
            reason="InvalidQuarantineAnnotation",
            message="podseg quarantine applies; ignored invalid entries: " + "; ".join(errors),
        )

    # -- what happened to a pod's rules -----------------------------------------------------
    def placement(self, pod: model.Pod, state: sync_pod.PodState, summary: tuple[str, ...]) -> None:
        """The pod's addresses are held by more than one namespace (decoys: each gets its
        rules), or by a namespace that holds another pod's too (contested: locked down):
        a log line, counters and an Event naming the namespaces, once per change."""
        if summary == state.placement:
            return
        state.placement = summary
        if not summary:
            return
        locked = [s for s in state.slots.values() if s.lockdown]
        metrics.EXTRA_NAMESPACES.labels("programmed").inc(
            max(0, len(state.slots) - len(locked) - 1)
        )
        metrics.EXTRA_NAMESPACES.labels("locked").inc(len(locked))
        log.warning(
            "pod_in_several_namespaces",
            pod=pod.name,
            namespace=pod.namespace,
            netns=list(summary),
            effect="each gets this pod's rules; one also holding another pod's is locked down",
        )
        self.recorder.on_pod(
            pod,
            reason="SeveralNamespaces",
            message="podseg found this pod's addresses in several network namespaces and "
            "programs its rules in each (a namespace holding another pod's addresses too is "
            "locked down): " + ", ".join(summary),
        )

    def drift(
        self,
        pod: model.Pod,
        expected: str | None,
        found: str | None,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        metrics.RULESET_DRIFT.inc()
        what = "removed" if found is None else "edited"
        bound.warning("ruleset_drift", expected=expected, found=found, change=what)
        self.recorder.on_pod(
            pod,
            reason="RulesetDrift",
            message=f"podseg rules in this pod's network namespace were {what} outside podseg "
            f"(found fingerprint {found or 'none'}, expected {expected}); restored",
        )

    def foreign_hooks(
        self,
        pod: model.Pod,
        before: tuple[str, ...],
        found: tuple[str, ...],
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        """Base chains of others that could undo the egress decision came (counted, logged,
        an Event) or went (logged)."""
        if not found:
            bound.info("foreign_hooks_gone", previous=list(before), effect=_SILENT_AGAIN)
            return
        metrics.FOREIGN_HOOKS.inc()
        bound.warning("foreign_hooks", hooks=list(found), previous=list(before), effect=_IN_OUTPUT)
        self.recorder.on_pod(
            pod,
            reason="ForeignHook",
            message="chains outside podseg in this pod's network namespace could undo its "
            f"egress decision ({'; '.join(found)}); {_IN_OUTPUT}",
        )

    def quarantined(
        self,
        pod: model.Pod,
        since: float,
        quarantine: ruleset.Quarantine,
        latency: float | None,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        allow = [render_nft.format_addr(r) for r in quarantine.allow_from]
        bound.warning(
            "pod_quarantined",
            since=iso(since),
            allow_from=allow,
            latency_ms=round(latency * 1000, 3) if latency is not None else None,
        )
        self.recorder.on_pod(
            pod,
            reason="Quarantined",
            message=f"podseg quarantined this pod at {iso(since)}: all traffic in and out is "
            f"dropped and its connections were cut"
            + (f"; forensic access from {', '.join(allow)}" if allow else ""),
        )

    def quarantine_lifted(
        self,
        pod: model.Pod,
        since: float,
        held: float,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        bound.info("pod_quarantine_lifted", since=iso(since), quarantined_seconds=round(held, 3))
        self.recorder.on_pod(
            pod,
            reason="QuarantineLifted",
            message=f"podseg lifted this pod's quarantine (in place since {iso(since)}); "
            "normal enforcement restored",
            event_type="Normal",
        )
