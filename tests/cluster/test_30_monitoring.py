"""README's optional install step, `kubectl apply -k deploy/monitoring/`, on the real cluster
with prometheus-operator's own CRDs: the API server validates the ServiceMonitor, PodMonitor
and PrometheusRule against the operator's schemas, strictly (an unknown or misspelt field is an
error, not silently pruned)."""

from __future__ import annotations

from typing import Any

from tests.cluster import support


def test_the_monitoring_kustomization_applies_against_the_operators_crds(
    kube: support.Kube, podseg: Any
) -> None:
    support.ensure_monitoring(kube)
    monitor = kube.json("-n", support.PODSEG_NS, "get", "servicemonitor", "podseg-agent")
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    assert kube.json("-n", support.PODSEG_NS, "get", "prometheusrule", "podseg-agent")["spec"][
        "groups"
    ]
    # the PodMonitor alternative validates too (a server-side dry run: one of the two, never
    # both)
    podmonitor = str(support.ROOT / "deploy" / "monitoring" / "podmonitor.yaml")
    kube.run("apply", "-f", podmonitor, "--validate=strict", "--dry-run=server")
