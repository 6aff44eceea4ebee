"""Reaching the node agents' read-only endpoints (agent.localapi) from an operator's machine:
through the API server's proxy to the agent pods (the operator's own credentials; RBAC
`get` on `pods/proxy` in podseg-system), or straight to given URLs (`--agent-url`, e.g. a
port-forward or a test bed)."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from agent.k8s import apiclient, rest

NAMESPACE = "podseg-system"
SELECTOR = "app.kubernetes.io/name=podseg,app.kubernetes.io/component=agent"
PORT = 9808


class AgentUnreachable(Exception):
    """An agent's endpoint did not answer; the message names the agent."""


class Agent:
    """One node agent's endpoint: by API proxy (`pod`) or by URL (`url`)."""

    def __init__(
        self,
        node: str,
        *,
        api: rest.Api | None = None,
        pod: str = "",
        url: str = "",
    ) -> None:
        self.node, self.api, self.pod, self.url = node, api, pod, url.rstrip("/")

    def state(self) -> dict[str, Any]:
        return self._get("state", {})

    def flows(self, query: Mapping[str, str]) -> dict[str, Any]:
        """The agent's flow store (`GET /podseg/v1/flows`, agent.localapi)."""
        return self._get("flows", {}, query)

    def local_pod(self, key: str, query: Mapping[str, str]) -> dict[str, Any]:
        namespace, name = key.split("/", 1)
        return self._get("pod", {"pod_ns": namespace, "pod_name": name}, query)

    def _get(
        self, what: str, params: Mapping[str, str], query: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        try:
            if self.url:
                return self._direct(what, params, query or {})
            return self._proxied(what, params, query or {})
        except (OSError, ValueError, apiclient.ApiError) as exc:
            raise AgentUnreachable(f"agent of node {self.node}: {exc}") from exc

    def _direct(
        self, what: str, params: Mapping[str, str], query: Mapping[str, str]
    ) -> dict[str, Any]:
        path = (
            f"/podseg/v1/{what}"
            if what in ("state", "flows")
            else (f"/podseg/v1/pods/{params['pod_ns']}/{params['pod_name']}")
        )
        url = self.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                found: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            found = json.loads(exc.read() or b"{}")
            found.setdefault("error", f"HTTP {exc.code}")
        return found

    def _proxied(
        self, what: str, params: Mapping[str, str], query: Mapping[str, str]
    ) -> dict[str, Any]:
        assert self.api is not None
        route = {"state": rest.AGENT_STATE, "flows": rest.AGENT_FLOWS}.get(what, rest.AGENT_POD)
        response = rest.call(
            self.api,
            "GET",
            route,
            path_params={"namespace": NAMESPACE, "name": self.pod, "port": str(PORT), **params},
            query=list(query.items()),
            timeout=(5, 10),
            routes=rest.OPERATOR_ROUTES,
        )
        found: dict[str, Any] = json.loads(response.data)
        return found


def discover(api: rest.Api) -> dict[str, Agent]:
    """The running agent pods by node, through the API."""
    response = rest.call(
        api,
        "GET",
        rest.AGENT_PODS,
        path_params={"namespace": NAMESPACE},
        query=[("labelSelector", SELECTOR)],
        timeout=(5, 30),
        routes=rest.OPERATOR_ROUTES,
    )
    agents: dict[str, Agent] = {}
    for item in json.loads(response.data).get("items") or []:
        node = (item.get("spec") or {}).get("nodeName")
        name = (item.get("metadata") or {}).get("name")
        if node and name and (item.get("status") or {}).get("phase") == "Running":
            agents[node] = Agent(node, api=api, pod=name)
    return agents


def from_urls(urls: list[str], api: rest.Api | None = None) -> dict[str, Agent]:
    """Agents given by URL; each names its node in its own state."""
    agents: dict[str, Agent] = {}
    for url in urls:
        probe = Agent(url, url=url)
        node = str(probe.state().get("node") or url)
        agents[node] = Agent(node, api=api, url=url)
    return agents
