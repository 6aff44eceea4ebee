"""The DaemonSets' args and env are what the real command line parses, and the ClusterRole
covers every Kubernetes API call the agent's code makes (derived from the code itself)."""

from __future__ import annotations

import argparse
import ast
import inspect
import os
import re
from collections.abc import Iterator
from typing import Any
from unittest import mock

import kubernetes.client
import pytest

from agent import cleanup, config
from agent.k8s import rest
from tests.deploy import conftest
from tests.deploy.conftest import find

SAMPLE_FIELDS = {"spec.nodeName": "node-7", "status.podIP": "10.1.2.3"}


class RecordingEnv(dict[str, str]):
    """os.environ stand-in that remembers which variables a parser reads."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)


CONFIGMAPS: dict[str, dict[str, str]] = {}  # name -> data, filled from the rendered base


def _container_env(container: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "configMapKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["configMapKeyRef"]
            env[item["name"]] = CONFIGMAPS[ref["name"]][ref["key"]]
        else:
            env[item["name"]] = SAMPLE_FIELDS[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def _expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in args."""
    return re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg)


def _parse(
    add_arguments: Any, container: dict[str, Any], argv: list[str]
) -> tuple[argparse.Namespace, RecordingEnv]:
    env = RecordingEnv(_container_env(container))
    parser = argparse.ArgumentParser(exit_on_error=False)
    with mock.patch.object(os, "environ", env):
        add_arguments(parser)
    expanded = [_expand(a, env) for a in argv]
    with mock.patch.object(parser, "error", side_effect=AssertionError):
        return parser.parse_args(expanded), env


def _args_env_used(container: dict[str, Any], read: set[str]) -> None:
    referenced = {m for a in container["args"] for m in re.findall(r"\$\((\w+)\)", a)}
    unused = set(_container_env(container)) - read - referenced - {"PYTHONUNBUFFERED"}
    assert not unused, f"env vars the command line never reads: {sorted(unused)}"


def test_agent_daemonset_args_and_env_parse_into_the_intended_settings(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    ds = find(rendered["base"], "DaemonSet", "podseg-agent")
    container = ds["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "agent"
    CONFIGMAPS.update(
        {o["metadata"]["name"]: o["data"] for o in rendered["base"] if o["kind"] == "ConfigMap"}
    )
    args, env = _parse(config.add_agent_arguments, container, container["args"][1:])
    settings = config.settings_from_args(args, env)
    assert settings.node_name == SAMPLE_FIELDS["spec.nodeName"]  # from NODE_NAME
    assert settings.metrics_host == SAMPLE_FIELDS["status.podIP"]
    assert settings.kubeconfig is None  # in-cluster credentials
    assert settings.scan_proc and settings.netns_dir == "/var/run/netns"
    # Containment from the ConfigMap: the default guarded ports, strict mode on.
    assert settings.node_guard_ports == config.Settings("n", None).node_guard_ports
    assert settings.strict
    _args_env_used(container, env.read)
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


def test_a_misspelt_flag_would_fail_the_check(rendered: dict[str, list[dict[str, Any]]]) -> None:
    ds = find(rendered["base"], "DaemonSet", "podseg-agent")
    container = ds["spec"]["template"]["spec"]["containers"][0]
    with pytest.raises((AssertionError, argparse.ArgumentError)):
        _parse(config.add_agent_arguments, container, ["--netns-directory=/x"])


def test_cleanup_daemonset_args_parse(rendered: dict[str, list[dict[str, Any]]]) -> None:
    ds = find(rendered["cleanup"], "DaemonSet", "podseg-cleanup")
    init = ds["spec"]["template"]["spec"]["initContainers"][0]
    assert init["args"][0] == "cleanup"
    args, env = _parse(cleanup.add_arguments, init, init["args"][1:])
    settings = cleanup.settings_from_args(args, env)
    assert not settings.dry_run and settings.scan_proc
    assert settings.netns_dir == "/var/run/netns"
    assert {m["mountPath"] for m in init["volumeMounts"]} == {settings.netns_dir}
    _args_env_used(init, env.read)


def test_least_privilege_security_context(rendered: dict[str, list[dict[str, Any]]]) -> None:
    agent = find(rendered["base"], "DaemonSet", "podseg-agent")
    clean = find(rendered["cleanup"], "DaemonSet", "podseg-cleanup")
    for container in (
        agent["spec"]["template"]["spec"]["containers"][0],
        clean["spec"]["template"]["spec"]["initContainers"][0],
    ):
        sc = container["securityContext"]
        assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {
            "drop": ["ALL"],
            "add": ["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"],
        }
        assert "memory" in container["resources"]["limits"]
    strategy = agent["spec"]["updateStrategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
    spec = agent["spec"]["template"]["spec"]
    assert spec["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in spec["tolerations"]


# -- RBAC derived from the code ----------------------------------------------------------------

# Everything under agent/ is in-cluster code: the harness that never runs in the cluster (API
# emulator, netns sandbox, demo) is the podseg-testbed distribution under testbed/, not scanned.
# In-cluster code that runs under its own ServiceAccount and role, checked against that role
# (`code_api_calls("agent/responder/")` in tests/deploy/test_responder.py), not the agent's.
OTHER_COMPONENTS = ("agent/responder/",)
VERBS = {"GET": "get", "POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


def _api_classes() -> list[type]:
    return [
        cls
        for name, cls in inspect.getmembers(kubernetes.client, inspect.isclass)
        if name.endswith("Api") and name not in ("ApiClient",)
    ]


def _endpoint(cls: type, method: str) -> tuple[str, str] | None:
    """(HTTP method, path) of a client method, read from the generated client's source."""
    for helper in (f"_{method}_serialize", f"{method}_with_http_info"):
        fn = getattr(cls, helper, None)
        if fn is None:
            continue
        src = inspect.getsource(fn)
        hit = re.search(r"method='(\w+)',\s*resource_path='([^']+)'", src) or re.search(
            r"call_api\(\s*'([^']+)',\s*'(\w+)'", src
        )
        if hit and hit.group(1).isupper():
            return hit.group(1), hit.group(2)
        if hit:
            return hit.group(2), hit.group(1)
    return None


def _rule_of(http: str, path: str, watched: bool) -> Iterator[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples RBAC checks for one request path."""
    parts = path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    if len(rest) > 2 and rest[0] == "namespaces" and rest[1] == "{namespace}":
        rest = rest[2:]
    resource = rest[0]
    named = len(rest) > 1
    if len(rest) > 2:
        resource += "/" + rest[2]  # subresource, e.g. pods/status
    verb = VERBS[http]
    if http == "GET" and not named:
        verb = "list"
        if watched:
            yield group, resource, "watch"
    if http == "DELETE" and not named:
        verb = "deletecollection"
    yield group, resource, verb


def code_api_calls(component: str | None = None) -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) the agent's in-cluster code can request (or, given a
    path prefix such as "agent/responder/", that component's code)."""
    endpoints: dict[str, set[tuple[str, str]]] = {}
    for cls in _api_classes():
        for name, _ in inspect.getmembers(cls, inspect.isfunction):
            if name.startswith("_") or name.endswith(
                ("_with_http_info", "_without_preload_content")
            ):
                continue
            endpoint = _endpoint(cls, name)
            if endpoint is not None:  # a REST call, not a helper such as close()
                endpoints.setdefault(name, set()).add(endpoint)
    assert len(endpoints) > 500, "the generated client's layout changed; fix _endpoint"
    needed: set[tuple[str, str, str]] = set()
    for path in sorted((conftest.ROOT / "agent").rglob("*.py")):
        rel = path.relative_to(conftest.ROOT).as_posix()
        if component is None and rel.startswith(OTHER_COMPONENTS):
            continue
        if component is not None and not rel.startswith(component):
            continue
        tree = ast.parse(path.read_text())
        # A module that streams with watch=True watches with every list function it uses.
        watched = any(
            isinstance(n, ast.keyword) and n.arg == "watch" and getattr(n.value, "value", 0)
            for n in ast.walk(tree)
        )
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in endpoints:
                for endpoint in endpoints[node.attr]:
                    needed.update(_rule_of(*endpoint, watched))
            # The agent's own REST calls (agent.k8s.rest): it refuses any route not declared.
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("call", "lister")
                and isinstance(node.value, ast.Name)
                and node.value.id == "rest"
            ):
                for method, route in rest.ROUTES:
                    needed.update(_rule_of(method, route, watched=True))
    return needed


def _granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_cluster_role_covers_every_api_call_in_the_code(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    needed = code_api_calls()
    # The scanner must see at least the calls every agent makes, or it is scanning nothing.
    assert {("", "pods", "list"), ("", "pods", "watch"), ("", "events", "create")} <= needed
    role = find(rendered["base"], "ClusterRole", "podseg-agent")
    missing = needed - _granted(role)
    assert not missing, f"ClusterRole podseg-agent lacks {sorted(missing)}"


def test_the_agent_requests_only_its_declared_routes() -> None:
    """What the RBAC check above reads (`rest.ROUTES`) binds the code: any other route is
    refused before a request leaves the agent."""
    api = kubernetes.client.ApiClient()
    try:
        with pytest.raises(ValueError, match="not one of the agent's API routes"):
            rest.call(api, "DELETE", rest.PATHS["pods"])
        with pytest.raises(ValueError, match="not one of the agent's API routes"):
            rest.call(
                api, "POST", "/api/v1/namespaces/{namespace}/pods", path_params={"namespace": "x"}
            )
    finally:
        api.close()


def test_role_grants_no_write_beyond_events(rendered: dict[str, list[dict[str, Any]]]) -> None:
    role = find(rendered["base"], "ClusterRole", "podseg-agent")
    for group, resource, verb in _granted(role):
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
