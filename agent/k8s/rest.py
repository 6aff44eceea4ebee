"""The agent's API calls as plain REST requests: every route the agent (and the operator
commands) may call, and `call`, which sends one.

Why: the agent needs six list/watch paths (nine with the network-policy-api kinds), their
discovery documents, one POST and a few Lease calls, and parses every answer itself. The agent
sends them through its own small client (`agent.k8s.apiclient`: importing the official one
costs it about 15 MiB); the operator commands, and an agent whose kubeconfig needs a
credential plugin, through the official client's `ApiClient` (`param_serialize` and
`call_api`: its authentication, TLS and proxies, without the generated per-method wrappers,
whose pydantic validation costs ~0.9 s at import). Either way a non-2xx answer raises
`apiclient.ApiError`.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from agent.k8s import apiclient

if TYPE_CHECKING:
    import kubernetes.client

    # The agent's own client, or the official one (operator commands, credential plugins).
    Api: TypeAlias = apiclient.Client | kubernetes.client.ApiClient

# The collection path of each kind the agent lists and watches (cluster-wide).
PATHS = {
    "nodes": "/api/v1/nodes",
    "namespaces": "/api/v1/namespaces",
    "pods": "/api/v1/pods",
    "networkpolicies": "/apis/networking.k8s.io/v1/networkpolicies",
    "services": "/api/v1/services",
    "endpointslices": "/apis/discovery.k8s.io/v1/endpointslices",
}

# The network-policy-api kinds, watched only while the cluster serves their CRDs
# (agent.k8s.adminwatch finds out through the group's discovery documents).
ADMIN_GROUP = "policy.networking.k8s.io"
ADMIN_VERSIONS = {
    "clusternetworkpolicies": "v1alpha2",
    "adminnetworkpolicies": "v1alpha1",
    "baselineadminnetworkpolicies": "v1alpha1",
}
ADMIN_PATHS = {
    resource: f"/apis/{ADMIN_GROUP}/{version}/{resource}"
    for resource, version in ADMIN_VERSIONS.items()
}
# Discovery: the group document and the resource list of each version the agent reads.
ADMIN_DISCOVERY = f"/apis/{ADMIN_GROUP}"
ADMIN_DISCOVERY_VERSIONS = {
    version: f"{ADMIN_DISCOVERY}/{version}" for version in sorted(set(ADMIN_VERSIONS.values()))
}

EVENTS = "/api/v1/namespaces/{namespace}/events"

# Leases in the agent's own namespace (agent.k8s.lease): one elects the single writer of policy
# status (agent.sync.leader), one per node says which policies that node has programmed.
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
LEASE = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"

# Every request the agent can make, as (HTTP method, path template): `call` refuses any other,
# and tests/deploy/test_agent_contract.py checks that the ClusterRole grants each of them (a GET
# of a collection is a list, and with `watch` a watch).
ROUTES = frozenset(
    {("GET", path) for path in PATHS.values()}
    | {("GET", path) for path in ADMIN_PATHS.values()}
    | {("GET", ADMIN_DISCOVERY)}
    | {("GET", path) for path in ADMIN_DISCOVERY_VERSIONS.values()}
    | {("POST", EVENTS), ("GET", LEASES), ("POST", LEASES), ("GET", LEASE), ("PUT", LEASE)}
)

# What operator commands (`podseg status`, `podseg explain --live`) read, with the operator's
# own credentials: the agent pods, and their local endpoints through the API server's proxy
# (agent.localapi). Never the agent's: its ClusterRole grants none of these.
AGENT_PODS = "/api/v1/namespaces/{namespace}/pods"
AGENT_STATE = "/api/v1/namespaces/{namespace}/pods/{name}:{port}/proxy/podseg/v1/state"
AGENT_POD = (
    "/api/v1/namespaces/{namespace}/pods/{name}:{port}/proxy/podseg/v1/pods/{pod_ns}/{pod_name}"
)
AGENT_FLOWS = "/api/v1/namespaces/{namespace}/pods/{name}:{port}/proxy/podseg/v1/flows"
OPERATOR_ROUTES = frozenset(
    {
        ("GET", AGENT_PODS),
        ("GET", AGENT_STATE),
        ("GET", AGENT_POD),
        ("GET", AGENT_FLOWS),
        ("GET", LEASES),
    }
)

# Keyword arguments of the generated list methods -> query parameters.
_QUERY = {
    "limit": "limit",
    "_continue": "continue",
    "watch": "watch",
    "resource_version": "resourceVersion",
    "allow_watch_bookmarks": "allowWatchBookmarks",
    "timeout_seconds": "timeoutSeconds",
}

ListFn = Callable[..., Any]


def call(
    api: Api,
    method: str,
    path: str,
    *,
    path_params: dict[str, str] | None = None,
    query: list[tuple[str, Any]] | None = None,
    body: Any = None,
    timeout: Any = None,
    routes: frozenset[tuple[str, str]] = ROUTES,
) -> Any:
    """One request to a route of `routes` (the agent's by default; `path` is its template,
    filled from `path_params`); the raw urllib3 response (unread). Non-2xx raises
    `apiclient.ApiError`."""
    if (method, path) not in routes:
        raise ValueError(f"{method} {path} is not one of the declared API routes")
    if isinstance(api, apiclient.Client):
        filled = path
        for name, value in (path_params or {}).items():
            filled = filled.replace("{" + name + "}", urllib.parse.quote(str(value), safe=""))
        return api.request(method, filled, query=query, body=body, timeout=timeout)
    import kubernetes.client  # this branch runs only with the official client: loaded already

    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = api.param_serialize(
        method=method,
        resource_path=path,
        path_params=path_params or {},
        query_params=query or [],
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    try:
        response = api.call_api(*request, _request_timeout=timeout)
    except kubernetes.client.ApiException as exc:  # e.g. TLS failures, as status 0
        raise apiclient.ApiError(int(exc.status or 0), str(exc.reason or "")) from exc
    if not 200 <= response.status <= 299:
        raw = response.read()
        raise apiclient.ApiError(response.status, response.reason or "", raw or b"")
    return response.response


def lister(api: Api, resource: str) -> ListFn:
    """A list/watch function of `resource` taking the generated `list_*` methods' keyword
    arguments (`limit`, `_continue`, `watch`, ...); it always returns the raw response, as
    those methods do with `_preload_content=False`."""
    path = PATHS.get(resource) or ADMIN_PATHS[resource]

    def list_or_watch(**kwargs: Any) -> Any:
        timeout = kwargs.pop("_request_timeout", None)
        kwargs.pop("_preload_content", None)
        unknown = set(kwargs) - set(_QUERY)
        if unknown:
            raise TypeError(f"unexpected arguments {sorted(unknown)}")
        query = [(_QUERY[k], v) for k, v in kwargs.items() if v is not None]
        return call(api, "GET", path, query=query, timeout=timeout)

    return list_or_watch
