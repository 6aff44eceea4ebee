"""An API client from a kubeconfig file, or from the pod's service account when there is none
(the DaemonSet's case): one place turns missing or broken credentials into one clear error."""

from __future__ import annotations

import kubernetes.client
import kubernetes.config


class CredentialsError(Exception):
    """No usable API credentials; the message says where they were looked for."""


def api_client(kubeconfig: str | None) -> kubernetes.client.ApiClient:
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
