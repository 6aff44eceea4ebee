"""Every Prometheus metric podseg exports, in one registry (design.md section 2, "Metrics").

Labels stay bounded: namespaces, workloads, directions, states, kinds; never pod IPs or names.
"""

from __future__ import annotations

import prometheus_client

REGISTRY = prometheus_client.CollectorRegistry()

POLICY_PROGRAMMING_SECONDS = prometheus_client.Histogram(
    "podseg_policy_programming_seconds",
    "From the agent seeing an API change to the affected rulesets being in the kernel.",
    ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
APPLY_SECONDS = prometheus_client.Histogram(
    "podseg_apply_seconds",
    "Time to commit one pod's ruleset transaction in its namespace.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)
MANAGED_PODS = prometheus_client.Gauge(
    "podseg_managed_pods",
    "Local pods by enforcement state (enforced, unprotected, failed).",
    ["state"],
    registry=REGISTRY,
)
APPLY_ERRORS = prometheus_client.Counter(
    "podseg_apply_errors_total",
    "Failed ruleset transactions, by reason.",
    ["reason"],
    registry=REGISTRY,
)
APPLIES = prometheus_client.Counter(
    "podseg_ruleset_applies_total",
    "Committed ruleset transactions.",
    registry=REGISTRY,
)
RULESET_DRIFT = prometheus_client.Counter(
    "podseg_ruleset_drift_total",
    "Pod tables found changed behind the agent's back at resync, and restored.",
    registry=REGISTRY,
)
SWEPT_TABLES = prometheus_client.Counter(
    "podseg_swept_tables_total",
    "Leftover podseg tables deleted from namespaces whose pod is gone, by reason.",
    ["reason"],
    registry=REGISTRY,
)
INVALID_POLICIES = prometheus_client.Gauge(
    "podseg_invalid_policies",
    "NetworkPolicies with invalid parts (those parts match nothing), by namespace.",
    ["namespace"],
    registry=REGISTRY,
)
NETNS_LOOKUP_FAILURES = prometheus_client.Counter(
    "podseg_netns_lookup_failures_total",
    "Local pods whose network namespace could not be found by their IPs (yet).",
    registry=REGISTRY,
)
API_ERRORS = prometheus_client.Counter(
    "podseg_api_errors_total",
    "Failed list/watch calls to the API server, by resource.",
    ["resource"],
    registry=REGISTRY,
)
WATCH_RELISTS = prometheus_client.Counter(
    "podseg_watch_relists_total",
    "Full relists after an expired resourceVersion or a failed watch, by resource.",
    ["resource"],
    registry=REGISTRY,
)
WATCH_EVENTS = prometheus_client.Counter(
    "podseg_watch_events_total",
    "Watch events received, by resource and type.",
    ["resource", "type"],
    registry=REGISTRY,
)
for _state in ("enforced", "unprotected", "failed"):
    MANAGED_PODS.labels(_state).set(0)


def exposition(registry: prometheus_client.CollectorRegistry = REGISTRY) -> bytes:
    """The text exposition of `registry` (the agent's, unless the responder asks for its own)."""
    return prometheus_client.generate_latest(registry)


# -- podseg responder (agent/responder/), its own Deployment: its own registry, so its /metrics
# shows only what the responder does, not the agent's series at zero ---------------------------
RESPONDER_REGISTRY = prometheus_client.CollectorRegistry()
RESPONDER_FINDINGS = prometheus_client.Counter(
    "podseg_responder_findings_total",
    "Findings received by podseg responder, by source (falco, wiz, generic) and outcome "
    "(quarantined, unchanged, dry_run, ignored, unknown_pod, malformed, unauthorized, error).",
    ["source", "outcome"],
    registry=RESPONDER_REGISTRY,
)
