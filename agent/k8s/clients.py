"""API clients from a kubeconfig file, or from the pod's service account when there is none
(the DaemonSet's case): one place turns missing or broken credentials into one clear error.

Two kinds: the agent's (`agent_client`: podseg's own small client, `agent.k8s.apiclient`, so
that the agent process never imports the official one and its ~15 MiB; the official client
only for a kubeconfig that needs it, such as one with a credential plugin), and the official
`ApiClient` for the operator commands and the responder (`api_client`: they run once, or need
its typed API classes). The official package is imported only when one of those is built.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import structlog
import yaml

from agent.k8s import apiclient

if TYPE_CHECKING:
    import kubernetes.client

    from agent.k8s import rest

log = structlog.get_logger(__name__)


class CredentialsError(Exception):
    """No usable API credentials; the message says where they were looked for."""


def agent_client(kubeconfig: str | None) -> rest.Api:
    """The agent's client: podseg's own, or the official one for a kubeconfig only it reads."""
    where = kubeconfig or "in-cluster service account"
    try:
        if kubeconfig:
            creds = apiclient.from_kubeconfig(kubeconfig)
        else:
            creds = apiclient.in_cluster(os.environ)
        return apiclient.Client(creds)
    except apiclient.Unsupported as exc:
        log.info("api_client_official", kubeconfig=kubeconfig, needs=str(exc))
        return api_client(kubeconfig)
    except (apiclient.ConfigError, OSError, ValueError, yaml.YAMLError) as exc:
        raise CredentialsError(f"cannot load API credentials from {where}: {exc}") from exc


def api_client(kubeconfig: str | None) -> kubernetes.client.ApiClient:
    """The official client's `ApiClient`."""
    import kubernetes.client
    import kubernetes.config

    try:
        if kubeconfig:
            client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(
                config_file=kubeconfig
            )
            return client
        kubernetes.config.load_incluster_config()
        return kubernetes.client.ApiClient()
    except (kubernetes.config.ConfigException, OSError, ValueError) as exc:
        where = kubeconfig or "in-cluster service account"
        raise CredentialsError(f"cannot load API credentials from {where}: {exc}") from exc
