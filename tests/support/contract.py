"""What the manifests must agree with in the code: a container's args and env parsed by the
real command line (with a record of the variables it reads), and RBAC derived from the code:
every (apiGroup, resource, verb) the in-cluster code can request, and what a role grants."""

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

from agent.k8s import rest
from tests.support.manifests import ROOT

SAMPLE_FIELDS = {
    "spec.nodeName": "node-7",
    "status.podIP": "10.1.2.3",
    "metadata.namespace": "podseg-system",
}


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


def parse_args(
    add_arguments: Any, container: dict[str, Any], argv: list[str]
) -> tuple[argparse.Namespace, RecordingEnv]:
    env = RecordingEnv(_container_env(container))
    parser = argparse.ArgumentParser(exit_on_error=False)
    with mock.patch.object(os, "environ", env):
        add_arguments(parser)
    expanded = [_expand(a, env) for a in argv]
    with mock.patch.object(parser, "error", side_effect=AssertionError):
        return parser.parse_args(expanded), env


def assert_env_used(container: dict[str, Any], read: set[str]) -> None:
    referenced = {m for a in container["args"] for m in re.findall(r"\$\((\w+)\)", a)}
    unused = set(_container_env(container)) - read - referenced - {"PYTHONUNBUFFERED"}
    assert not unused, f"env vars the command line never reads: {sorted(unused)}"


# Everything under agent/ is in-cluster code: the harness that never runs in the cluster (API
# emulator, netns sandbox, demo) is the podseg-testbed distribution under testbed/, not scanned.
# In-cluster code that runs under its own ServiceAccount and role, checked against that role
# (`code_api_calls("agent/responder/")` in tests/deploy/test_responder.py), not the agent's.
OTHER_COMPONENTS = ("agent/responder/",)


# The "group" of a non-resource URL (discovery documents) in the triples below.
NON_RESOURCE = "nonResourceURLs"
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
    if not rest:  # a discovery document: a non-resource URL
        yield NON_RESOURCE, path, VERBS[http]
        return
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
    for path in sorted((ROOT / "agent").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
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


def granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule.get("apiGroups", ())
        for resource in rule.get("resources", ())
        for verb in rule["verbs"]
    } | {
        (NON_RESOURCE, url, verb)
        for rule in role["rules"]
        for url in rule.get("nonResourceURLs", ())
        for verb in rule["verbs"]
    }
