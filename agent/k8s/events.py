"""Kubernetes Events about what operators must fix (invalid policies, unreachable pods).

Posting is best effort and never blocks enforcement: it runs in a thread, failures are logged
and counted, and each (object, resourceVersion, reason) is reported once per agent.
"""

from __future__ import annotations

import asyncio
import datetime
import secrets
from typing import Any

import structlog

from agent import metrics, model
from agent.k8s import apiclient, rest

log = structlog.get_logger(__name__)

HTTP_CONFLICT = 409


class Recorder:
    def __init__(self, api: rest.Api | None, node_name: str) -> None:
        self._api = api
        self._node = node_name
        self._sent: set[tuple[str, str, str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def on_pod(
        self, pod: model.Pod, *, reason: str, message: str, event_type: str = "Warning"
    ) -> None:
        """An Event about a pod (see `warn`)."""
        self.warn(
            kind="Pod",
            api_version="v1",
            namespace=pod.namespace,
            name=pod.name,
            resource_version=pod.resource_version,
            reason=reason,
            message=message,
            event_type=event_type,
        )

    def warn(
        self,
        *,
        kind: str,
        api_version: str,
        namespace: str,
        name: str,
        resource_version: str,
        reason: str,
        message: str,
        event_type: str = "Warning",
        event_name: str | None = None,
        blocking: bool = False,
        object_namespace: str | None = None,
    ) -> None:
        """Post an Event once per (object, version, reason), in the background (`blocking`:
        now, from a worker thread). `event_name`: a fixed name, so a second post of the same
        Event (by a new leader) is refused as AlreadyExists. `object_namespace`: the involved
        object's namespace when it differs from the Event's ("" for a cluster-scoped object,
        whose Events live in `default`)."""
        involved_ns = namespace if object_namespace is None else object_namespace
        marker = (f"{involved_ns}/{name}", kind, resource_version, reason)
        if self._api is None or marker in self._sent:
            return
        self._sent.add(marker)
        now = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": event_name or f"{name}.{secrets.token_hex(8)}",
                "namespace": namespace,
            },
            "involvedObject": {
                "kind": kind,
                "apiVersion": api_version,
                **({"namespace": involved_ns} if involved_ns else {}),
                "name": name,
                "resourceVersion": resource_version,
            },
            "reason": reason,
            "message": message[:1024],
            "type": event_type,
            "source": {"component": "podseg-agent", "host": self._node},
            "reportingComponent": "podseg.io/agent",
            "reportingInstance": self._node,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        if blocking:
            self.post_now(namespace, body)
            return
        task = asyncio.get_running_loop().create_task(self._post(namespace, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, namespace: str, body: dict[str, Any]) -> None:
        await asyncio.to_thread(self.post_now, namespace, body)

    def post_now(self, namespace: str, body: dict[str, Any]) -> None:
        """POST one Event (blocking); failures are logged and counted, never raised."""
        api = self._api
        assert api is not None
        try:
            params = {"namespace": namespace}
            response = rest.call(
                api, "POST", rest.EVENTS, path_params=params, body=body, timeout=(5, 10)
            )
            response.release_conn()
        except apiclient.ApiError as exc:
            if exc.status == HTTP_CONFLICT:  # a fixed-name Event another writer already posted
                log.info("event_already_posted", namespace=namespace, reason=body["reason"])
                return
            metrics.API_ERRORS.labels("events").inc()
            log.warning("event_post_failed", namespace=namespace, error=str(exc))
        except Exception as exc:
            metrics.API_ERRORS.labels("events").inc()
            log.warning("event_post_failed", namespace=namespace, error=str(exc))
