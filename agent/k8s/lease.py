"""coordination.k8s.io/v1 Leases: leader election among the agents, and per-node reports.

Why: some things must be said once for the whole cluster, not once per node (a Warning Event
about a policy). The agents elect one writer with a Lease, the way Kubernetes controllers do:
whoever holds an unexpired Lease leads; the holder renews it; anyone may take it over once it
has not changed for its duration, as measured on the taker's own clock (no trust in other
nodes' clocks); writes carry the resourceVersion read, so two takers cannot both win. A leader
that stops releases the Lease (empty holder) so another agent takes over at its next step.

The same API carries each node's report (a Lease named after the node, renewed by its agent,
with an annotation) that the leader reads. Blocking calls: run them in a thread.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from agent.k8s import apiclient, rest

HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409


def micro_time(wall: float | None = None) -> str:
    """A MicroTime as the API writes it."""
    moment = datetime.datetime.fromtimestamp(time.time() if wall is None else wall, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def get(api: rest.Api, namespace: str, name: str) -> dict[str, Any] | None:
    """The Lease, or None when it does not exist."""
    try:
        response = rest.call(
            api,
            "GET",
            rest.LEASE,
            path_params={"namespace": namespace, "name": name},
            timeout=(5, 10),
        )
    except apiclient.ApiError as exc:
        if exc.status == HTTP_NOT_FOUND:
            return None
        raise
    return _json(response)


def write(api: rest.Api, namespace: str, body: dict[str, Any], *, create: bool) -> dict[str, Any]:
    """Create the Lease, or replace it (the body's resourceVersion guards the replace)."""
    params = {"namespace": namespace, "name": body["metadata"]["name"]}
    route = rest.LEASES if create else rest.LEASE
    response = rest.call(
        api, "POST" if create else "PUT", route, path_params=params, body=body, timeout=(5, 10)
    )
    return _json(response)


def list_labelled(
    api: rest.Api,
    namespace: str,
    selector: str,
    routes: frozenset[tuple[str, str]] = rest.ROUTES,
) -> list[dict[str, Any]]:
    """The Leases of `namespace` carrying the label selector `selector`."""
    response = rest.call(
        api,
        "GET",
        rest.LEASES,
        path_params={"namespace": namespace},
        query=[("labelSelector", selector)],
        timeout=(5, 10),
        routes=routes,
    )
    items = _json(response).get("items")
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _json(response: Any) -> dict[str, Any]:
    try:
        data = json.loads(response.read() or b"{}")
    finally:
        response.release_conn()
    return data if isinstance(data, dict) else {}


def body(
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    resource_version: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = dict(labels)
    if annotations is not None:
        meta["annotations"] = dict(annotations)
    if resource_version:
        meta["resourceVersion"] = resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": dict(spec),
    }


@dataclasses.dataclass
class Elector:
    """One candidate for the Lease `namespace/name`; `step()` every `duration / 3` seconds."""

    api: rest.Api
    namespace: str
    name: str
    identity: str
    duration: int = 15
    clock: Callable[[], float] = time.monotonic
    _observed: tuple[Any, ...] = ()
    _observed_at: float = 0.0
    _renewed_at: float | None = None

    @property
    def leading(self) -> bool:
        """True while our last successful write is younger than the Lease's duration."""
        renewed = self._renewed_at
        return renewed is not None and self.clock() - renewed < self.duration

    def step(self) -> bool:
        """Acquire, renew or observe the Lease once; whether we lead afterwards. API errors
        propagate (the caller logs them); leadership then lapses with the duration."""
        now = self.clock()
        lease = get(self.api, self.namespace, self.name)
        if lease is None:
            return self._write(None, {}, now)
        spec = lease.get("spec") if isinstance(lease.get("spec"), dict) else {}
        assert isinstance(spec, dict)
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = spec.get("leaseDurationSeconds")
        if not isinstance(duration, int) or duration <= 0:
            duration = self.duration
        if holder and holder != self.identity and now - self._observed_at < duration:
            self._renewed_at = None
            return False
        return self._write(lease, spec, now)

    def _write(self, lease: dict[str, Any] | None, spec: dict[str, Any], now: float) -> bool:
        ours = spec.get("holderIdentity") == self.identity
        transitions = spec.get("leaseTransitions")
        count = transitions if isinstance(transitions, int) and transitions >= 0 else 0
        new_spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration,
            "acquireTime": spec.get("acquireTime") if ours else micro_time(),
            "renewTime": micro_time(),
            "leaseTransitions": count if ours or lease is None else count + 1,
        }
        rv = (lease or {}).get("metadata", {}).get("resourceVersion")
        try:
            write(
                self.api,
                self.namespace,
                body(self.namespace, self.name, new_spec, resource_version=rv),
                create=lease is None,
            )
        except apiclient.ApiError as exc:
            if exc.status == HTTP_CONFLICT:  # someone else wrote first: not us this time
                self._renewed_at = None
                return False
            raise
        self._renewed_at = now
        return True

    def release(self) -> None:
        """Give the Lease up (empty holder) if we hold it, so another candidate takes over at
        once rather than after the duration. Best effort: errors propagate to the caller."""
        if not self.leading:
            return
        self._renewed_at = None
        lease = get(self.api, self.namespace, self.name)
        spec = (lease or {}).get("spec") or {}
        if lease is None or spec.get("holderIdentity") != self.identity:
            return
        released = {**spec, "holderIdentity": "", "renewTime": micro_time()}
        rv = lease.get("metadata", {}).get("resourceVersion")
        write(
            self.api,
            self.namespace,
            body(self.namespace, self.name, released, resource_version=rv),
            create=False,
        )
