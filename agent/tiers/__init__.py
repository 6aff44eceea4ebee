"""Cluster-scoped admin policies (network-policy-api): ClusterNetworkPolicy tiers Admin and
Baseline, and the older AdminNetworkPolicy / BaselineAdminNetworkPolicy. Kept apart from
`agent.model` because they are a second policy language with its own precedence (tiers,
priorities, first match wins, Pass), evaluated around NetworkPolicy rather than within it."""
