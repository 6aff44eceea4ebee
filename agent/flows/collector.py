"""The agent side of drop capture: drives the drop reader (a part of the helper process,
`agent.helperlink`), turns drops into flows and metrics.

* Flows come from NFLOG (sampled: the kernel logs at most `render_nft.LOG_RATE` packets per
  deny rule and namespace); they feed `podseg_dropped_flows_total` and the flow log, one JSON
  line per aggregated flow naming both ends (pod, namespace, workload, IP, or `external` with
  the address folded to a /24 or /64), protocol, port, verdict and the isolating policies.
* Packet totals come from the named nft counters of each deny rule (with `--backend
  iptables`, the packet counters of its counting deny rules; exact, whatever the rate), read
  through the dataplane worker every window: `podseg_dropped_packets_total`. The per-policy
  hit counters of the same tables are read in the same listing (`agent.flows.hits`).
* Allowed connections are sampled too (NFLOG prefix `podseg accept <direction>`): with the
  drops, every sample becomes a workload edge (`agent.flows.edges`, each connection counted
  once), and every window's edges go to the per-node flow store (`agent.flows.flowstore`,
  written in a thread of its own) that the local API serves to `podseg flows`.
* Series are labelled by the local pod's namespace and workload, never its name or IP; those of
  workloads with no pod left on the node are removed; past `--max-drop-series` label sets, new
  ones are booked under `_other` and counted in `podseg_dropped_series_folded_total`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import structlog

from agent import config, metrics, model, store
from agent.calc import compile as calc_compile
from agent.calc import mode as calc_mode
from agent.calc import ruleset
from agent.dataplane import listener, netns, protocol
from agent.dataplane.nft import render as render_nft
from agent.flows import aggregate, edges, flowstore, hits, nflog

log = structlog.get_logger(__name__)

BARE_POD_WORKLOAD = "<none>"
FOLDED = "_other"
VERDICTS = {"enforce": "dropped", "visibility": "would-drop"}


def workload_label(pod: model.Pod) -> str:
    """The `workload` label value: the owner's name, or `<none>` for a bare pod."""
    return pod.workload or BARE_POD_WORKLOAD


COUNTER_BATCH = 8  # pods per counters request to the dataplane worker


@dataclasses.dataclass
class Watched:
    pod: model.Pod
    target: netns.Target
    policies: dict[str, tuple[str, ...]]
    mode: str


def flow_logger(path: str | None) -> tuple[Any, TextIO | None]:
    """A structlog logger writing one JSON line per event to `path` (appending) or stdout."""
    stream: TextIO | None = open(path, "a", buffering=1) if path else None  # noqa: SIM115
    logger = structlog.wrap_logger(
        structlog.PrintLogger(stream or sys.stdout),
        processors=[
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
            _time_and_event_first,
            structlog.processors.JSONRenderer(),
        ],
    )
    return logger, stream


def _time_and_event_first(
    _logger: Any, _method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    return {"time": event.pop("time", None), "event": event.pop("event", None), **event}


def _iso(epoch: float) -> str:
    stamp = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Collector:
    def __init__(
        self,
        settings: config.Settings,
        cluster: store.Store,
        dataplane: protocol.Dataplane,
    ) -> None:
        self.settings = settings
        self.store = cluster
        self.dataplane = dataplane
        self.watched: dict[str, Watched] = {}
        self.aggregator = aggregate.Aggregator()
        self.last_counts: dict[str, dict[str, int]] = {}
        self.series: set[tuple[str, str]] = set()
        self.hits = hits.Hits()
        self.flow_log, self._stream = flow_logger(settings.flow_log_file)
        self._send: Callable[[listener.Open | listener.Close], None] = _nowhere
        self._tasks: list[asyncio.Task[None]] = []
        self._opened: set[str] = set()
        self._ips: tuple[float, dict[str, model.Pod]] | None = None
        self.edges = edges.Edges()
        self.flow_store: flowstore.FlowStore | None = None
        self._ingress_isolated: dict[str, bool] = {}

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self.settings.flow_store:
            self.flow_store = await asyncio.to_thread(
                flowstore.FlowStore.open,
                self.settings.flow_store,
                self.settings.flow_retention,
                self.settings.flow_store_max_flows,
            )
        self._tasks = [asyncio.create_task(self._tick_loop(), name="flow-window")]

    # -- the drop reader, in the helper process (agent.helperlink) ----------------------------
    def attach(self, send: Callable[[listener.Open | listener.Close], None]) -> None:
        self._send = send

    def connected(self, restarted: bool) -> None:
        """The helper (re)started: reopen every watched namespace."""
        self._opened.clear()
        metrics.FLOW_READERS.set(0)
        for key, watched in self.watched.items():
            self._send(listener.Open(key, watched.target.path, watched.target.ino))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            self.store_edges()
            self.emit_flows()
        store, self.flow_store = self.flow_store, None
        if store is not None:
            await asyncio.to_thread(store.close)
        if self._stream is not None:
            self._stream.close()

    # -- what to watch (called by the reconciler) ------------------------------------------
    def watch(
        self,
        pod: model.Pod,
        target: netns.Target,
        rs: ruleset.PodRuleset,
        applied: bool,
        key: str | None = None,
    ) -> None:
        """Capture drops of `pod` in `target`; `applied`: its table (and counters) is fresh.
        `key` names the capture (default the pod's key; a pod whose rules are in several
        namespaces has one per namespace)."""
        key = key or pod.key
        old = self.watched.get(key)
        self.watched[key] = Watched(
            pod=pod,
            target=target,
            policies={"ingress": rs.ingress.policies, "egress": rs.egress.policies},
            mode=rs.mode.value,
        )
        if applied:
            self.last_counts[key] = {}  # a replaced table starts its counters at zero
        if old is None or (old.target.path, old.target.ino) != (target.path, target.ino):
            self._send(listener.Open(key, target.path, target.ino))

    def unwatch(self, key: str) -> None:
        if self.watched.pop(key, None) is not None:
            self._send(listener.Close(key))
        self.last_counts.pop(key, None)

    # -- reading ----------------------------------------------------------------------------
    def handle(self, message: dict[str, Any]) -> None:
        key = str(message.get("key", ""))
        if "opened" in message:
            self._opened.add(str(message["opened"]))
        elif "closed" in message:
            closed = str(message["closed"])
            self._opened.discard(closed)
            log.info("flow_reader_closed", pod=closed, reason=message.get("reason"))
        elif "error" in message:
            log.warning("flow_reader_error", pod=key, error=message["error"])
        for result, count in (message.get("stats") or {}).items():
            if result != "other" and count:
                metrics.NFLOG_MESSAGES.labels(result).inc(count)
        now = time.time()
        ips = None
        for prefix, src, dst, proto, sport, dport in message.get("packets") or []:
            if ips is None:
                ips = self._pod_ips()
            packet = nflog.Packet(prefix, src, dst, int(proto), sport, dport)
            accepted = render_nft.parse_accept_prefix(packet.prefix)
            if accepted is not None:
                metrics.ALLOWED_FLOW_SAMPLES.labels(accepted).inc()
            elif not self.aggregator.add(key, packet, now, ips.__contains__):
                metrics.NFLOG_MESSAGES.labels("unparseable").inc()
                continue
            edge = edges.classify(packet, ips, self._ingress_sampled)
            if edge is not None:
                self.edges.add(edge, now)
        metrics.FLOW_READERS.set(len(self._opened))

    def _ingress_sampled(self, pod: model.Pod) -> bool:
        """Whether `pod`'s own ingress samples what it accepts: its ingress is isolated, or it
        is in visibility mode, where what the default lets in is sampled too (remembered
        until the end of the window)."""
        known = self._ingress_isolated.get(pod.key)
        if known is None:
            loosen = self.settings.allow_pod_visibility
            visibility = calc_mode.resolve(pod, self.store.namespaces, loosen).mode
            known = visibility is ruleset.PolicyMode.VISIBILITY or any(
                "Ingress" in policy.policy_types and calc_compile.selects(policy, pod)
                for policy in self.store.policies_for(pod)
            )
            self._ingress_isolated[pod.key] = known
        return known

    def store_edges(self) -> None:
        """Hand this window's workload edges to the flow store's writer (never blocks)."""
        self._ingress_isolated.clear()
        batch = self.edges.flush()
        if self.edges.overflow:
            log.warning("flow_edges_full", samples_not_aggregated=self.edges.overflow)
            self.edges.overflow = 0
        if batch and self.flow_store is not None:
            self.flow_store.submit(batch)

    def _pod_ips(self) -> dict[str, model.Pod]:
        """Pod by IP, rebuilt at most once a second (drops arrive in bursts)."""
        now = time.monotonic()
        if self._ips is None or now - self._ips[0] > 1.0:
            index = {
                ip: pod
                for pod in self.store.pods.values()
                if not pod.host_network
                for ip in pod.ips
            }
            self._ips = (now, index)
        return self._ips[1]

    # -- every window -----------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flow_window)
            try:
                self.store_edges()
                self.emit_flows()
                await self.read_counters()
                self.drop_gone_series()
            except protocol.DataplaneError as exc:
                log.warning("drop_counters_unreadable", error=str(exc))
            except Exception:  # never let a reporting bug stop enforcement or capture
                log.exception("flow_window_failed")

    def _labels(
        self, pod: model.Pod, direction: str, mode: str, metric: str, amount: int
    ) -> list[str]:
        ident = (pod.namespace, workload_label(pod))
        if ident not in self.series and len(self.series) >= self.settings.max_drop_series:
            metrics.DROP_SERIES_FOLDED.labels(metric).inc(amount)
            return [FOLDED, FOLDED, direction, mode]
        self.series.add(ident)
        return [*ident, direction, mode]

    def emit_flows(self) -> None:
        flows = self.aggregator.flush()
        if self.aggregator.overflow:
            log.warning("flow_table_full", packets_not_aggregated=self.aggregator.overflow)
            self.aggregator.overflow = 0
        if not flows:
            return
        ips = self._pod_ips()
        for key, stats in flows:
            watched = self.watched.get(key.pod)
            local = watched.pod if watched is not None else self.store.pods.get(key.pod)
            if local is None:
                continue
            metrics.DROPPED_FLOWS.labels(
                *self._labels(local, key.direction, key.mode, "flows", 1)
            ).inc()
            self.flow_log.info(
                "dropped_flow",
                direction=key.direction,
                verdict=VERDICTS.get(key.mode, key.mode),
                policy_mode=key.mode,
                reason=key.reason,
                policy_tier=POLICY_TIERS.get(key.reason, ""),
                src=_end(key.src, ips),
                dst=_end(key.dst, ips),
                protocol=nflog.protocol_name(key.protocol),
                port=key.dport,
                policies=list(watched.policies.get(key.direction, ())) if watched else [],
                packets_logged=stats.packets,
                first_seen=_iso(stats.first),
                last_seen=_iso(stats.last),
            )
            metrics.FLOW_LOG_LINES.inc()

    async def read_counters(self) -> None:
        if not self.watched:
            return
        targets = [
            protocol.CounterTarget(key, w.target.path, w.target.ino)
            for key, w in self.watched.items()
        ]
        counts: dict[str, dict[str, int]] = {}
        # A few pods per request: the worker also commits rulesets, and an apply waiting
        # behind one read of every pod's counters would wait for all of them.
        for start in range(0, len(targets), COUNTER_BATCH):
            batch = tuple(targets[start : start + COUNTER_BATCH])
            request = protocol.ReadCounters(batch, self.settings.backend)
            counts.update((await self.dataplane.call(request)).values)
        for key, values in counts.items():
            watched = self.watched.get(key)
            if watched is None:
                continue
            last = self.last_counts.setdefault(key, {})
            for name, value in values.items():
                parsed = render_nft.parse_counter_name(name)
                previous = last.get(name, 0)
                delta = value - previous if value >= previous else value  # reset: new table
                if parsed is None:
                    if self.hits.add(name, delta, self.store.policies):
                        last[name] = value
                    continue
                last[name] = value
                if delta > 0:
                    direction, _reason, mode = parsed
                    metrics.DROPPED_PACKETS.labels(
                        *self._labels(watched.pod, direction, mode, "packets", delta)
                    ).inc(delta)

    def drop_gone_series(self) -> None:
        """Remove the series of workloads that have no pod on this node any more (and those
        of deleted policies)."""
        self.hits.drop_gone(self.store.policies)
        live = {(w.pod.namespace, workload_label(w.pod)) for w in self.watched.values()}
        live.update(
            (pod.namespace, workload_label(pod))
            for pod in self.store.pods.values()
            if pod.node_name == self.settings.node_name
        )
        for ident in sorted(self.series - live):
            self.series.discard(ident)
            for metric in (metrics.DROPPED_PACKETS, metrics.DROPPED_FLOWS):
                for direction in ("ingress", "egress"):
                    for mode in VERDICTS:
                        with contextlib.suppress(KeyError):
                            metric.remove(*ident, direction, mode)
            log.info("drop_series_removed", namespace=ident[0], workload=ident[1])


def _nowhere(_request: listener.Open | listener.Close) -> None:
    """Where requests go without a helper (counters only, unit tests): nowhere."""


# Which tier decided a drop, by the reason in its NFLOG prefix ("" for quarantine, the node
# guard and anti-spoofing, which come before every tier).
POLICY_TIERS = {"admin": "admin", "policy": "networkpolicy", "baseline": "baseline"}


def _end(address: str, ips: dict[str, model.Pod]) -> dict[str, str]:
    pod = ips.get(address)
    if pod is None:
        return {"kind": "external", "ip": address}
    return {
        "kind": "pod",
        "namespace": pod.namespace,
        "pod": pod.name,
        "workload": workload_label(pod),
        "ip": address,
    }
