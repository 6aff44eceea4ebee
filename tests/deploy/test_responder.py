"""deploy/responder/: the Deployment's args parse into the intended settings, it runs non-root on
a read-only filesystem with its token from a Secret, and its role is exactly what its code calls:
get and patch on pods."""

from __future__ import annotations

from typing import Any

import agent
from agent.responder import settings
from tests.support import contract
from tests.support.manifests import find

GET_PATCH_PODS = {("", "pods", "get"), ("", "pods", "patch")}


def _deployment(rendered: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return find(rendered["responder"], "Deployment", "podseg-responder")


def test_deployment_args_and_env_parse_into_the_intended_settings(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    deployment = _deployment(rendered)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][0] == "responder"
    args, env = contract.parse_args(settings.add_arguments, container, container["args"][1:])
    config = settings.settings_from_args(args)
    assert config.host == contract.SAMPLE_FIELDS["status.podIP"] and config.kubeconfig is None
    assert config.policy.min_severity is not None and config.policy.min_severity.label == (
        "critical"
    )
    assert not config.dry_run
    # The cluster's own namespace and the responder's are never quarantined by a finding.
    assert {"kube-system", deployment["metadata"]["namespace"]} <= config.protected_namespaces
    contract.assert_env_used(container, env.read)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == config.port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    # The token file is the mounted Secret's key, read-only; no token in the manifests.
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (name,) = [n for n, m in mounts.items() if config.token_file.startswith(m["mountPath"] + "/")]
    assert mounts[name]["readOnly"] is True
    secret = volumes[name]["secret"]
    assert secret["secretName"] == "podseg-responder-token"
    relative = config.token_file.removeprefix(mounts[name]["mountPath"] + "/")
    assert [i["path"] for i in secret["items"]] == [relative]
    assert not [o for o in rendered["responder"] if o["kind"] == "Secret"]


def test_deployment_runs_non_root_read_only_with_resources(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    deployment = _deployment(rendered)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert "hostNetwork" not in pod and "hostPID" not in pod
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    version = agent.__version__
    assert container["image"] == f"ghcr.io/podseg/podseg:{version}"


def test_service_selects_the_responder_and_only_it(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    deployment = _deployment(rendered)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = find(rendered["responder"], "Service", "podseg-responder")
    assert service["spec"]["selector"].items() <= labels.items()
    agent = find(rendered["base"], "DaemonSet", "podseg-agent")
    agent_labels = agent["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= agent_labels.items()
    port_names = {
        p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names


def test_role_is_exactly_get_and_patch_on_pods(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    role = find(rendered["responder"], "ClusterRole", "podseg-responder")
    assert contract.granted(role) == GET_PATCH_PODS
    assert all(not rule.get("resourceNames") for rule in role["rules"])
    binding = find(rendered["responder"], "ClusterRoleBinding", "podseg-responder")
    sa = _deployment(rendered)["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa, "namespace": "podseg-system"}
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    find(rendered["responder"], "ServiceAccount", sa)


def test_the_responders_api_calls_are_exactly_its_role(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """Derived from the code: a new API call in agent/responder/ fails this until the role (and
    this contract) grows with it; a grant the code no longer needs fails it too."""
    role = find(rendered["responder"], "ClusterRole", "podseg-responder")
    assert contract.code_api_calls("agent/responder/") == contract.granted(role) == GET_PATCH_PODS


def test_the_agents_role_does_not_need_the_responders_write() -> None:
    assert ("", "pods", "patch") not in contract.code_api_calls()
