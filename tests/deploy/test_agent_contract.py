"""The DaemonSets' args and env are what the real command line parses, and the ClusterRole
covers every Kubernetes API call the agent's code makes (derived from the code itself)."""

from __future__ import annotations

import argparse
from typing import Any

import kubernetes.client
import pytest

from agent import cleanup, config
from agent.commands import cni_install
from agent.k8s import rest
from tests.support import contract
from tests.support.manifests import find


def test_agent_daemonset_args_and_env_parse_into_the_intended_settings(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    ds = find(rendered["base"], "DaemonSet", "podseg-agent")
    container = ds["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "agent"
    args, env = contract.parse_args(config.add_agent_arguments, container, container["args"][1:])
    settings = config.settings_from_args(args, env)
    assert settings.node_name == contract.SAMPLE_FIELDS["spec.nodeName"]  # from NODE_NAME
    assert settings.metrics_host == contract.SAMPLE_FIELDS["status.podIP"]
    assert settings.kubeconfig is None  # in-cluster credentials
    assert settings.scan_proc and settings.netns_dir == "/var/run/netns"
    # Containment from the ConfigMap: the default guarded ports, strict mode on.
    assert settings.node_guard_ports == config.Settings("n", None).node_guard_ports
    assert settings.strict
    # Policy status: its Leases live in the agent's own namespace, which the Role covers.
    assert settings.lease_namespace == "podseg-system" and settings.policy_status
    contract.assert_env_used(container, env.read)
    # The probes and the port the agent listens on are one and the same.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == settings.metrics_port
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[settings.netns_dir]["mountPropagation"] == "HostToContainer"
    # /proc is searched, so the pod must see the host's processes; the host namespace must be
    # the worker's own (it is excluded from candidates only as such).
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostPID"] is True and spec["hostNetwork"] is True
    # podseg-cni: the socket the plugin asks on is the host's, the same the installer names.
    assert settings.cni_socket == "/run/podseg/cni.sock"
    volumes = {v["name"]: v for v in spec["volumes"]}
    socket_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/run/podseg")
    assert volumes[socket_mount["name"]]["hostPath"]["path"] == "/run/podseg"


def _cni_args(init: dict[str, Any], action: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    cni_install.add_arguments(parser)
    args = parser.parse_args(init["args"][1:])
    assert init["args"][0] == "cni" and args.action == action
    return args


def test_cni_install_and_uninstall_use_the_hosts_cni_directories(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for base, name, init_name, action in (
        ("base", "podseg-agent", "cni-install", "install"),
        ("cleanup", "podseg-cleanup", "cni-uninstall", "uninstall"),
    ):
        spec = find(rendered[base], "DaemonSet", name)["spec"]["template"]["spec"]
        init = next(c for c in spec["initContainers"] if c["name"] == init_name)
        args = _cni_args(init, action)
        volumes = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in init["volumeMounts"]}
        assert mounts[args.conf_dir] == "/etc/cni/net.d"
        assert mounts[args.bin_dir] == "/opt/cni/bin"
        if action == "install":
            assert args.agent_socket == "/run/podseg/cni.sock"


def test_a_misspelt_flag_would_fail_the_check(rendered: dict[str, list[dict[str, Any]]]) -> None:
    ds = find(rendered["base"], "DaemonSet", "podseg-agent")
    container = ds["spec"]["template"]["spec"]["containers"][0]
    with pytest.raises((AssertionError, argparse.ArgumentError)):
        contract.parse_args(config.add_agent_arguments, container, ["--netns-directory=/x"])


def test_cleanup_daemonset_args_parse(rendered: dict[str, list[dict[str, Any]]]) -> None:
    ds = find(rendered["cleanup"], "DaemonSet", "podseg-cleanup")
    inits = {c["name"]: c for c in ds["spec"]["template"]["spec"]["initContainers"]}
    assert list(inits) == ["cni-uninstall", "cleanup"]  # the CNI chain goes first
    init = inits["cleanup"]
    assert init["args"][0] == "cleanup"
    args, env = contract.parse_args(cleanup.add_arguments, init, init["args"][1:])
    settings = cleanup.settings_from_args(args, env)
    assert not settings.dry_run and settings.scan_proc
    assert settings.netns_dir == "/var/run/netns"
    assert {m["mountPath"] for m in init["volumeMounts"]} == {settings.netns_dir}
    contract.assert_env_used(init, env.read)


def test_least_privilege_security_context(rendered: dict[str, list[dict[str, Any]]]) -> None:
    agent = find(rendered["base"], "DaemonSet", "podseg-agent")
    clean = find(rendered["cleanup"], "DaemonSet", "podseg-cleanup")
    for container, added in (
        # NET_RAW: the iptables backend's set match (tests/deploy/test_agent_capabilities.py)
        (agent["spec"]["template"]["spec"]["containers"][0], ["NET_RAW"]),
        (clean["spec"]["template"]["spec"]["initContainers"][1], ["NET_RAW"]),
    ):
        sc = container["securityContext"]
        assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {
            "drop": ["ALL"],
            "add": ["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE", *added],
        }
        assert "memory" in container["resources"]["limits"]
    strategy = agent["spec"]["updateStrategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
    spec = agent["spec"]["template"]["spec"]
    assert spec["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in spec["tolerations"]


# -- RBAC derived from the code ----------------------------------------------------------------


def test_cluster_role_covers_every_api_call_in_the_code(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    needed = contract.code_api_calls()
    # The scanner must see at least the calls every agent makes, or it is scanning nothing.
    assert {("", "pods", "list"), ("", "pods", "watch"), ("", "events", "create")} <= needed
    role = find(rendered["base"], "ClusterRole", "podseg-agent")
    leases = find(rendered["base"], "Role", "podseg-agent-leases")
    missing = needed - contract.granted(role) - contract.granted(leases)
    assert not missing, (
        f"ClusterRole podseg-agent (and Role podseg-agent-leases) lack {sorted(missing)}"
    )


def test_the_agent_requests_only_its_declared_routes() -> None:
    """What the RBAC check above reads (`rest.ROUTES`) binds the code: any other route is
    refused before a request leaves the agent."""
    api = kubernetes.client.ApiClient()
    try:
        with pytest.raises(ValueError, match="not one of the declared API routes"):
            rest.call(api, "DELETE", rest.PATHS["pods"])
        with pytest.raises(ValueError, match="not one of the declared API routes"):
            rest.call(
                api, "POST", "/api/v1/namespaces/{namespace}/pods", path_params={"namespace": "x"}
            )
    finally:
        api.close()


def test_role_grants_no_write_beyond_events(rendered: dict[str, list[dict[str, Any]]]) -> None:
    role = find(rendered["base"], "ClusterRole", "podseg-agent")
    for group, resource, verb in contract.granted(role):
        assert "*" not in (group, resource, verb)
        if verb not in ("get", "list", "watch"):
            assert resource == "events", (group, resource, verb)
    binding = find(rendered["base"], "ClusterRoleBinding", "podseg-agent")
    ds = find(rendered["base"], "DaemonSet", "podseg-agent")
    sa = ds["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa, "namespace": "podseg-system"}
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    find(rendered["base"], "ServiceAccount", sa)


def test_lease_writes_are_confined_to_the_agents_namespace(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The only writes besides Events: Leases, through a Role (so only in podseg-system)."""
    role = find(rendered["base"], "Role", "podseg-agent-leases")
    assert role["metadata"]["namespace"] == "podseg-system"
    assert contract.granted(role) == {
        ("coordination.k8s.io", "leases", verb)
        for verb in ("get", "list", "watch", "create", "update")
    }
    binding = find(rendered["base"], "RoleBinding", "podseg-agent-leases")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "podseg-agent-leases",
    }
    ds = find(rendered["base"], "DaemonSet", "podseg-agent")
    sa = ds["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa, "namespace": "podseg-system"}
    ]
