"""Every Prometheus metric podseg exports, in one registry (docs/metrics.md, the reference a test
keeps in step with this module; bounded labels: docs/architecture.md, doctrine 7).

Labels stay bounded: namespaces, workloads, directions, states, kinds; never pod IPs or names.
"""

from __future__ import annotations

import prometheus_client

import agent

REGISTRY = prometheus_client.CollectorRegistry()
# process_* (CPU, memory, open files, start time) of the agent process itself.
prometheus_client.ProcessCollector(registry=REGISTRY)
BUILD_INFO = prometheus_client.Gauge(
    "podseg_build_info",
    "Always 1; the running podseg version as a label.",
    ["version"],
    registry=REGISTRY,
)
BUILD_INFO.labels(agent.version()).set(1)

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
    "Pod tables found changed behind the agent's back (notified, or at resync), and restored.",
    registry=REGISTRY,
)
FOREIGN_HOOKS = prometheus_client.Counter(
    "podseg_foreign_hooks_total",
    "Pod namespaces found with new base chains of others that could undo podseg's egress "
    "decision (their denied egress is then dropped in the output hook).",
    registry=REGISTRY,
)
TAMPER_NOTICES = prometheus_client.Counter(
    "podseg_tamper_notices",
    "Pod namespaces read back at once because a commit there was not the agent's own "
    "(nftables change notifications).",
    registry=REGISTRY,
)
TAMPER_WATCHES = prometheus_client.Gauge(
    "podseg_tamper_watches",
    "Namespaces with an open nftables change-notification socket.",
    registry=REGISTRY,
)
HOLDOVER_NAMESPACES = prometheus_client.Gauge(
    "podseg_holdover_namespaces",
    "Namespaces whose podseg tables are held as found in the kernel, because the agent has "
    "not had a complete LIST from the API server since it started.",
    registry=REGISTRY,
)
TAMPER_WATCH_RESTARTS = prometheus_client.Counter(
    "podseg_tamper_watch_restarts",
    "Restarts of the change watcher, with the helper process it runs in (every watched "
    "namespace is then read back).",
    registry=REGISTRY,
)
HELPER_RESTARTS = prometheus_client.Counter(
    "podseg_helper_restarts",
    "Restarts of the helper process (drop reader and change watcher), by the part that "
    "failed (drops, changes; process when it exited without naming one).",
    ["failed"],
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
INVALID_ADMIN_POLICIES = prometheus_client.Gauge(
    "podseg_invalid_admin_policies",
    "ClusterNetworkPolicies, AdminNetworkPolicies and BaselineAdminNetworkPolicies with invalid "
    "parts (those parts match nothing), by kind.",
    ["kind"],
    registry=REGISTRY,
)
ADMIN_PRIORITY_CONFLICTS = prometheus_client.Gauge(
    "podseg_admin_priority_conflicts",
    "Admin policies sharing their tier and priority with another (ordered by kind and name), "
    "by tier.",
    ["tier"],
    registry=REGISTRY,
)
EXTRA_NAMESPACES = prometheus_client.Counter(
    "podseg_extra_namespaces_total",
    "Namespaces holding a local pod's addresses besides its first (decoys), by action: "
    "programmed with the pod's rules, or locked down (it holds another pod's addresses too).",
    ["action"],
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
SERVICE_INPUT_PROBLEMS = prometheus_client.Counter(
    "podseg_service_input_problems_total",
    "Bad Service/EndpointSlice input seen (logged once per object version), by kind.",
    ["kind"],
    registry=REGISTRY,
)
DROP_LABELS = ["namespace", "workload", "direction", "policy_mode"]
DROPPED_PACKETS = prometheus_client.Counter(
    "podseg_dropped_packets_total",
    "Packets dropped (policy_mode=enforce) or that would have been (visibility), by the local "
    "pod's namespace and workload; exact, from nftables counters.",
    DROP_LABELS,
    registry=REGISTRY,
)
RULE_HITS = prometheus_client.Counter(
    "podseg_rule_hits_total",
    "Packets a NetworkPolicy's rules allowed (new connections and connectionless packets, not "
    "replies), summed over the local pods it selects; by the policy's namespace and name and "
    "direction, from per-policy kernel counters. A packet several policies allow counts for "
    "each of them.",
    ["namespace", "policy", "direction"],
    registry=REGISTRY,
)
POLICY_STATUS_LEADER = prometheus_client.Gauge(
    "podseg_policy_status_leader",
    "1 on the one agent that holds the policy-status Lease and writes policy Events, else 0.",
    registry=REGISTRY,
)
POLICIES_SELECTING_NOTHING = prometheus_client.Gauge(
    "podseg_policies_selecting_no_pod",
    "NetworkPolicies that select no running pod anywhere in the cluster (leader only).",
    registry=REGISTRY,
)
POLICIES_NOT_REALIZED = prometheus_client.Gauge(
    "podseg_policies_not_realized",
    "NetworkPolicies not programmed at their current version on every node that runs a pod "
    "they select (leader only).",
    registry=REGISTRY,
)
DROPPED_FLOWS = prometheus_client.Counter(
    "podseg_dropped_flows_total",
    "Dropped or would-drop flows (direction, source, destination, protocol, port per "
    "aggregation window), from rate-limited NFLOG samples.",
    DROP_LABELS,
    registry=REGISTRY,
)
DROP_SERIES_FOLDED = prometheus_client.Counter(
    "podseg_dropped_series_folded_total",
    'Drop counts booked under namespace/workload "_other" because the series cap was reached.',
    ["metric"],
    registry=REGISTRY,
)
NFLOG_MESSAGES = prometheus_client.Counter(
    "podseg_nflog_messages_total",
    "NFLOG messages read from pod namespaces, by result (ok, truncated, unparseable, overrun).",
    ["result"],
    registry=REGISTRY,
)
FLOW_READERS = prometheus_client.Gauge(
    "podseg_flow_readers",
    "Pod namespaces with an open NFLOG socket.",
    registry=REGISTRY,
)
FLOW_LOG_LINES = prometheus_client.Counter(
    "podseg_flow_log_lines_total",
    "Dropped-flow lines written to the flow log.",
    registry=REGISTRY,
)
ALLOWED_FLOW_SAMPLES = prometheus_client.Counter(
    "podseg_allowed_flow_samples_total",
    "Samples of new connections a pod's policy accepted, read from NFLOG (rate-limited in "
    "the kernel), by direction.",
    ["direction"],
    registry=REGISTRY,
)
FLOW_STORE_FLOWS = prometheus_client.Gauge(
    "podseg_flow_store_flows",
    "Workload flows held in this node's flow store.",
    registry=REGISTRY,
)
FLOW_STORE_EVICTIONS = prometheus_client.Counter(
    "podseg_flow_store_evictions_total",
    "Flows removed from the flow store, by reason (retention, cap).",
    ["reason"],
    registry=REGISTRY,
)
FLOW_STORE_ERRORS = prometheus_client.Counter(
    "podseg_flow_store_errors_total",
    "Flow store failures, by operation (open, write, query, queue_full).",
    ["op"],
    registry=REGISTRY,
)
FLOW_STORE_WRITE_SECONDS = prometheus_client.Histogram(
    "podseg_flow_store_write_seconds",
    "Time to write one batch of flows to the flow store (in its writer thread).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
    registry=REGISTRY,
)
INVALID_MODE_LABELS = prometheus_client.Counter(
    "podseg_invalid_mode_labels_total",
    "Pods whose podseg.io/mode label (or their namespace's) is not enforce/visibility.",
    registry=REGISTRY,
)
MALFORMED_OBJECTS = prometheus_client.Counter(
    "podseg_malformed_objects_total",
    "API objects the agent could not read (each version once); the last readable version stays.",
    ["resource"],
    registry=REGISTRY,
)
REFUSED_MODE_LABELS = prometheus_client.Counter(
    "podseg_refused_mode_labels_total",
    "Pod podseg.io/mode labels refused because they would loosen the namespace's mode.",
    registry=REGISTRY,
)
AGENT_READY = prometheus_client.Gauge(
    "podseg_agent_ready",
    "1 once every initial LIST is done and the local pods were programmed once (= /readyz).",
    registry=REGISTRY,
)
for _result in ("ok", "truncated", "unparseable", "overrun"):
    NFLOG_MESSAGES.labels(_result)
QUARANTINED_PODS = prometheus_client.Gauge(
    "podseg_quarantined_pods",
    "Local pods in quarantine (label podseg.io/quarantine=true), by namespace.",
    ["namespace"],
    registry=REGISTRY,
)
CONNECTIONS_CUT = prometheus_client.Counter(
    "podseg_connections_cut_total",
    "Conntrack entries of pod namespaces cut because the ruleset no longer allows them, by "
    "reason (quarantine: deleted; strict: marked denied, so each packet is judged again).",
    ["reason"],
    registry=REGISTRY,
)
CONNTRACK_CUT_SECONDS = prometheus_client.Histogram(
    "podseg_conntrack_cut_seconds",
    "Time to list a pod namespace's conntrack entries and delete the illegal ones.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
RULESET_UPDATES = prometheus_client.Counter(
    "podseg_ruleset_updates_total",
    "Committed ruleset changes by mode: patch (set elements only), replace (whole tables), "
    "patch_refused (an incremental update declined or failed, then replaced).",
    ["mode"],
    registry=REGISTRY,
)
PATCH_FALLBACKS = prometheus_client.Counter(
    "podseg_patch_fallbacks_total",
    "Incremental updates (set elements only) that fell back to a whole apply, by backend and "
    "reason: failed (the kernel or ipset refused it, e.g. a set missing or full), unvouched "
    "(the namespace did not hold exactly the agent's last commit); rendered: a change from "
    "the last commit that could not be derived from the peer-set elements alone, so the "
    "ruleset was rendered whole (and diffed for a patch).",
    ["backend", "reason"],
    registry=REGISTRY,
)
PASS_SECONDS = prometheus_client.Histogram(
    "podseg_policy_pass_seconds",
    "From the agent receiving a batch of API changes to the last affected pod's rules being "
    "committed, by event kind (pod_labels, namespace_labels, policy, pod_ip, ...).",
    ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
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
    "(quarantined, unchanged, dry_run, ignored, unknown_pod, protected, replaced, malformed, "
    "unauthorized, rate_limited, timeout, error).",
    ["source", "outcome"],
    registry=RESPONDER_REGISTRY,
)
RESPONDER_CONNECTIONS = prometheus_client.Gauge(
    "podseg_responder_connections",
    "HTTP connections open to podseg responder (at most --max-connections).",
    registry=RESPONDER_REGISTRY,
)
RESPONDER_CONNECTIONS_REFUSED = prometheus_client.Counter(
    "podseg_responder_connections_refused",
    "Connections podseg responder answered 503 and closed at once: --max-connections were open.",
    registry=RESPONDER_REGISTRY,
)
POD_UNPROTECTED_SECONDS = prometheus_client.Histogram(
    "podseg_pod_unprotected_seconds",
    "From a local pod's network namespace appearing to its first ruleset being committed; 0 "
    "for pods announced by podseg-cni (closed by its pending table from the start).",
    buckets=(0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)
PODS_PENDING = prometheus_client.Gauge(
    "podseg_pods_pending",
    "Pods whose podseg-cni ADD waits for their first ruleset (pending table in place).",
    registry=REGISTRY,
)
CNI_REQUESTS = prometheus_client.Counter(
    "podseg_cni_requests_total",
    "Requests of the podseg-cni plugin, by result (programmed, gone, bad_request).",
    ["result"],
    registry=REGISTRY,
)
