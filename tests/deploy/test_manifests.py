"""deploy/ renders, validates against the Kubernetes and prometheus-operator schemas, and is
consistent with itself and with the agent (ports, labels, selectors, metric names)."""

from __future__ import annotations

import copy
import functools
import json
import pathlib
import re
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

import agent
from tests.support import kustomize, manifests
from tests.support.manifests import find

K8S_VERSION = kubernetes_validate.latest_version()
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
# Recent releases the agent is meant for; the latest bundled schema must be at least this.
MIN_K8S = (1, 30)
SCHEMAS = pathlib.Path(__file__).with_name("schemas")


def all_objects(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    extra = [d for f in manifests.EXTRA_FILES for d in kustomize.load_documents(f)]
    return [o for objs in rendered.values() for o in objs] + extra


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    """Strict JSON schema of a prometheus-operator kind (see schemas/generate.py)."""
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{kind.lower()}.json").read_text())
    return schema


def validate(obj: dict[str, Any]) -> None:
    if obj["kind"] in CRD_KINDS:
        jsonschema.validate(obj, crd_schema(obj["kind"]))
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_schemas_are_a_current_release() -> None:
    major, minor = (int(x) for x in K8S_VERSION.split(".")[:2])
    assert (major, minor) >= MIN_K8S


@pytest.mark.parametrize("base", sorted(manifests.BASES))
def test_every_base_renders(rendered: dict[str, list[dict[str, Any]]], base: str) -> None:
    assert rendered[base], f"{base} renders to nothing"
    for obj in rendered[base]:
        if obj["kind"] not in kustomize.CLUSTER_SCOPED:
            assert obj["metadata"]["namespace"] == "podseg-system"


def test_every_object_validates(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = all_objects(rendered)
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"} <= kinds
    assert {"DaemonSet", "Service", "ServiceMonitor", "PodMonitor", "PrometheusRule"} <= kinds
    for obj in objects:
        validate(obj)


@pytest.mark.parametrize(
    ("kind", "mutate"),
    [
        ("DaemonSet", lambda o: o["spec"]["template"]["spec"].update(hostNetwrok=True)),
        ("DaemonSet", lambda o: o["spec"]["updateStrategy"].update(rollingUpdate=[1])),
        ("Service", lambda o: o["spec"]["ports"][0].update(port="metrics")),
        ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(portt="metrics")),
        ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(interval=30)),
        ("PrometheusRule", lambda o: o["spec"]["groups"][0].update(rules="none")),
    ],
)
def test_the_validators_reject_broken_objects(
    rendered: dict[str, list[dict[str, Any]]], kind: str, mutate: Any
) -> None:
    """The schema check is real: a typo or a wrong type in any of these kinds fails it."""
    obj = copy.deepcopy(
        find(rendered["base"] + all_objects(rendered)[-1:] + rendered["monitoring"], kind)
    )
    mutate(obj)
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        validate(obj)


def _pod_labels(ds: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()
    return labels


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels is used here"
    return bool(selector["matchLabels"].items() <= labels.items())


def test_service_and_monitors_select_the_agent_and_only_it(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    agent = find(rendered["base"], "DaemonSet", "podseg-agent")
    cleanup = find(rendered["cleanup"], "DaemonSet", "podseg-cleanup")
    agent_labels, cleanup_labels = _pod_labels(agent), _pod_labels(cleanup)
    container = agent["spec"]["template"]["spec"]["containers"][0]
    port_names = {p["name"] for p in container["ports"]}

    service = find(rendered["base"], "Service")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= agent_labels.items()
    assert not service["spec"]["selector"].items() <= cleanup_labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names

    svc_monitor = find(rendered["monitoring"], "ServiceMonitor")
    assert _matches(svc_monitor["spec"]["selector"], service["metadata"]["labels"])
    assert {e["port"] for e in svc_monitor["spec"]["endpoints"]} <= {
        p["name"] for p in service["spec"]["ports"]
    }
    pod_monitor = find(all_objects(rendered), "PodMonitor")
    assert _matches(pod_monitor["spec"]["selector"], agent_labels)
    assert not _matches(pod_monitor["spec"]["selector"], cleanup_labels)
    assert {e["port"] for e in pod_monitor["spec"]["podMetricsEndpoints"]} <= port_names
    for monitor in (svc_monitor, pod_monitor):
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["podseg-system"]


def test_alerts_use_only_metrics_the_agent_exports(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    rule = find(rendered["monitoring"], "PrometheusRule")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    used = {m for e in exprs for m in re.findall(r"\bpodseg_[a-z_]+", e)}
    assert used, "the alerts reference no podseg metric"
    exported = manifests.exported_names()
    assert used <= exported, f"unknown metrics in alerts: {sorted(used - exported)}"
    for alert in (r for g in rule["spec"]["groups"] for r in g["rules"]):
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}
        assert alert["annotations"]["summary"]


def test_namespace_admits_the_agent_and_images_match_the_version(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    ns = find(rendered["base"], "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    version = agent.__version__
    images = {
        c["image"]
        for o in all_objects(rendered)
        if o["kind"] == "DaemonSet"
        for key in ("containers", "initContainers")
        for c in o["spec"]["template"]["spec"].get(key, [])
    }
    assert images == {f"ghcr.io/podseg/podseg:{version}"}


def test_renderer_refuses_what_it_does_not_implement(tmp_path: pathlib.Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: []\ncommonLabels: {a: b}\n"
    )
    with pytest.raises(kustomize.RenderError, match="commonLabels"):
        kustomize.render(tmp_path)
