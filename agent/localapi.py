"""The agent's read-only view of itself, on its metrics port: what it has programmed for each
local pod, and how that pod's programmed ruleset judges one connection.

Why: `podseg explain --live` and `podseg status` must say what the node actually enforces,
not only what the API implies. Nothing here changes anything; no secrets are served (pod
names, addresses, states and fingerprints only). Routes:

  GET /podseg/v1/state                        the agent and every local pod, one line each
  GET /podseg/v1/pods/<namespace>/<name>      one pod; with `peer`, `direction` (ingress |
      ?peer=IP&direction=&protocol=&port=     egress), `protocol`, `port`: the verdict of the
                                              programmed ruleset and what the kernel holds now
  GET /podseg/v1/flows                        this node's flow store (agent.flows.flowstore):
      ?since=1h|RFC3339&verdict=&namespace=   workload flows last seen since then, of one
                                              verdict (allowed, dropped, would-drop), with an
                                              end in one namespace; 503 when there is no store
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp.web

import agent
from agent import durations
from agent.calc import ruleset, verdict
from agent.dataplane import protocol
from agent.flows import flowstore, graph
from agent.sync import loop as sync_loop
from agent.sync import pod as sync_pod

PREFIX = "/podseg/v1"


def pod_view(state: sync_pod.PodState) -> dict[str, Any]:
    rs = state.ruleset
    return {
        "pod": state.key,
        "state": state.state.value,
        "netns": state.target.path if state.target is not None else None,
        "fingerprint": state.fingerprint,
        "mode": rs.mode.value if rs is not None else None,
        "quarantined": state.quarantined_since is not None,
        "quarantined_since": _iso(state.quarantined_since),
        "ingress_policies": list(rs.ingress.policies) if rs is not None else [],
        "egress_policies": list(rs.egress.policies) if rs is not None else [],
        "last_commit": _iso(state.committed_wall),
        "failures": state.failures,
        "last_error": state.last_error or None,
    }


def _iso(wall: float | None) -> str | None:
    if wall is None:
        return None
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).isoformat(timespec="seconds")


class LocalApi:
    def __init__(self, rec: sync_loop.Reconciler, node: str, is_ready: Callable[[], bool]) -> None:
        self.rec, self.node, self.is_ready = rec, node, is_ready
        self.started = time.time()

    def routes(self, app: aiohttp.web.Application) -> None:
        app.router.add_get(f"{PREFIX}/state", self._state)
        app.router.add_get(f"{PREFIX}/pods/{{namespace}}/{{name}}", self._pod)
        app.router.add_get(f"{PREFIX}/flows", self._flows)

    async def _flows(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        collector = self.rec.flows
        store = collector.flow_store if collector is not None else None
        if store is None:
            return _error(503, f"node {self.node} keeps no flow store")
        query = request.query
        try:
            since = parse_since(query.get("since"), time.time())
        except ValueError as exc:
            return _error(400, str(exc))
        chosen = query.get("verdict") or None
        if chosen is not None and chosen not in graph.VERDICTS:
            return _error(400, f"verdict {chosen!r} is none of {', '.join(graph.VERDICTS)}")
        try:
            # read and serialised in a thread: tens of thousands of flows must not hold the loop
            body = await asyncio.to_thread(
                self._flows_body, store, since, chosen, query.get("namespace") or None
            )
        except flowstore.StoreError as exc:
            return _error(500, str(exc))
        return aiohttp.web.Response(text=body, content_type="application/json")

    def _flows_body(
        self,
        store: flowstore.FlowStore,
        since: float | None,
        chosen: str | None,
        namespace: str | None,
    ) -> str:
        flows = store.query(since, chosen, namespace)
        return json.dumps({"node": self.node, "since": _iso(since), "flows": flows})

    async def _state(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        pods = [pod_view(s) for _, s in sorted(self.rec.pods.items())]
        counts = {s.value: sum(p["state"] == s.value for p in pods) for s in sync_pod.Status}
        errors = [p for p in pods if p["last_error"]]
        body = {
            "node": self.node,
            "version": agent.version(),
            "ready": self.is_ready(),
            "pods": counts,
            "last_error": errors[-1]["last_error"] if errors else None,
            "started": _iso(self.started),
            "local_pods": pods,
        }
        return aiohttp.web.json_response(body)

    async def _pod(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        key = f"{request.match_info['namespace']}/{request.match_info['name']}"
        state = self.rec.pods.get(key)
        if state is None:
            return _error(404, f"{key} is not a pod of node {self.node}")
        body = pod_view(state)
        if "peer" in request.query:
            try:
                body["verdict"] = self._judge(state, request.query)
            except (ValueError, KeyError) as exc:
                return _error(400, str(exc))
            body["kernel_fingerprint"] = await self._kernel_fingerprint(state)
        return aiohttp.web.json_response(body)

    def _judge(self, state: sync_pod.PodState, query: Any) -> str:
        """`allowed` | `denied` | `would-drop` by the ruleset this agent programmed."""
        rs = state.ruleset
        if rs is None:
            raise ValueError(f"no ruleset programmed for {state.key} yet")
        direction = ruleset.Direction(query.get("direction", "ingress"))
        proto = ruleset.PROTOCOL_NUMBERS[str(query.get("protocol", "TCP")).upper()]
        port = int(query["port"]) if query.get("port") else None
        peer = str(query["peer"])
        if verdict.allows(rs, direction, peer, proto, port):
            return "allowed"
        # Quarantine and the node guard drop in any mode; only policy drops are would-drops.
        open_policy = dataclasses.replace(
            rs, ingress=ruleset.DirectionRuleset(), egress=ruleset.DirectionRuleset()
        )
        contained = not verdict.allows(open_policy, direction, peer, proto, port)
        if rs.mode is ruleset.PolicyMode.VISIBILITY and not contained:
            return "would-drop"
        return "denied"

    async def _kernel_fingerprint(self, state: sync_pod.PodState) -> str | None:
        """The fingerprint the pod's namespace holds right now (read from the kernel)."""
        if state.target is None:
            return None
        try:
            found = await self.rec.dataplane.call(
                self.rec.backend.examine_request(state.target, whole=False)
            )
        except protocol.DataplaneError:
            return None
        return found.fingerprint


def parse_since(text: str | None, now: float) -> float | None:
    """`since` as epoch seconds: a duration back from `now` (`1h`) or an RFC 3339 time."""
    if not text:
        return None
    if text[0].isdigit() and ("T" in text or "-" in text):
        try:
            stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"since {text!r} is neither a duration nor an RFC 3339 time") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=datetime.UTC)
        return stamp.timestamp()
    return now - durations.parse(text)


def _error(status: int, message: str) -> aiohttp.web.Response:
    return aiohttp.web.json_response({"error": message}, status=status)
