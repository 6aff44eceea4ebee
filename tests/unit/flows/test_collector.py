"""The collector's bookkeeping without a kernel: counter deltas and resets, the series cap
with its folded counter, removal of gone workloads' series, and flow-log lines."""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import Sequence
from typing import TypeVar, cast

from agent import config, metrics, model, store
from agent.calc import ruleset
from agent.dataplane import netns, protocol
from agent.flows import collector, flowstore

ENFORCE = "deny.ingress.policy.enforce"
R = TypeVar("R")


class CountingWorker:
    """Answers counter reads from a dict the test sets (the real worker reads nft counters)."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, int]] = {}
        self.requests: list[int] = []  # how many pods each counter read asked for
        self.backend_name = ""

    async def call(self, request: protocol.Request[R]) -> R:
        assert isinstance(request, protocol.ReadCounters)
        self.backend_name = request.backend
        self.requests.append(len(request.targets))
        keys = {t.key for t in request.targets}
        reply = protocol.Counters({k: dict(v) for k, v in self.values.items() if k in keys})
        return cast(R, reply)

    async def batch(
        self, requests: Sequence[protocol.Request[R]]
    ) -> list[R | protocol.DataplaneError]:
        return [await self.call(r) for r in requests]


def sample(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return value or 0.0


def make(tmp_path: pathlib.Path, cap: int = 1000) -> tuple[collector.Collector, CountingWorker]:
    settings = config.Settings(
        node_name="n1",
        kubeconfig=None,
        flow_log_file=str(tmp_path / "flows.jsonl"),
        max_drop_series=cap,
    )
    worker = CountingWorker()
    return collector.Collector(settings, store.Store(), worker), worker


def pod(ns: str, name: str, workload: str) -> model.Pod:
    return model.Pod(ns, name, node_name="n1", ips=(f"198.18.9.{len(name)}",), workload=workload)


TARGET = netns.Target("/run/netns/x", 1, ("eth0",))
RS = ruleset.PodRuleset("cq", "a", ingress=ruleset.DirectionRuleset(True, policies=("cq/deny",)))


def test_counter_deltas_resets_and_gone_series(tmp_path: pathlib.Path) -> None:
    c, worker = make(tmp_path)
    web = pod("cq", "web-1", "web")
    c.watch(web, TARGET, RS, applied=True)
    labels = {
        "namespace": "cq",
        "workload": "web",
        "direction": "ingress",
        "policy_mode": "enforce",
    }
    worker.values = {web.key: {ENFORCE: 5, "not-ours": 9}}
    asyncio.run(c.read_counters())
    assert sample("podseg_dropped_packets_total", **labels) == 5
    worker.values = {web.key: {ENFORCE: 8}}
    asyncio.run(c.read_counters())
    assert sample("podseg_dropped_packets_total", **labels) == 8
    worker.values = {web.key: {ENFORCE: 2}}  # the table was replaced: counters restarted
    asyncio.run(c.read_counters())
    assert sample("podseg_dropped_packets_total", **labels) == 10
    c.unwatch(web.key)
    c.drop_gone_series()
    assert metrics.REGISTRY.get_sample_value("podseg_dropped_packets_total", labels) is None


def test_series_cap_folds_and_counts(tmp_path: pathlib.Path) -> None:
    c, worker = make(tmp_path, cap=1)
    first, second = pod("cap1", "a", "one"), pod("cap2", "b", "")
    for p in (first, second):
        c.watch(p, TARGET, RS, applied=True)
    worker.values = {first.key: {ENFORCE: 3}, second.key: {ENFORCE: 4}}
    before = sample("podseg_dropped_series_folded_total", metric="packets")
    asyncio.run(c.read_counters())
    more = {"direction": "ingress", "policy_mode": "enforce"}
    assert sample("podseg_dropped_packets_total", namespace="cap1", workload="one", **more) == 3
    folded = sample("podseg_dropped_packets_total", namespace="_other", workload="_other", **more)
    assert folded >= 4
    assert sample("podseg_dropped_series_folded_total", metric="packets") == before + 4


def test_flow_lines_name_both_ends(tmp_path: pathlib.Path) -> None:
    c, _worker = make(tmp_path)
    web, client = pod("fq", "web-1", "web"), pod("fq", "c", "")
    for p in (web, client):
        c.store.pods[p.key] = p
    c.watch(web, TARGET, RS, applied=True)
    prefix = "podseg ingress policy enforce"
    c.handle(
        {
            "key": web.key,
            "packets": [
                [prefix, client.ips[0], web.ips[0], 6, 40000, 80],
                [prefix, client.ips[0], web.ips[0], 6, 40001, 80],
                [prefix, "203.0.113.7", web.ips[0], 17, 5, 53],
            ],
            "stats": {"ok": 3, "truncated": 1},
        }
    )
    c.emit_flows()
    asyncio.run(c.close())
    lines = [json.loads(x) for x in (tmp_path / "flows.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    by_proto = {line["protocol"]: line for line in lines}
    tcp = by_proto["tcp"]
    assert tcp["src"] == {
        "kind": "pod",
        "namespace": "fq",
        "pod": "c",
        "workload": "<none>",
        "ip": client.ips[0],
    }
    assert tcp["dst"]["workload"] == "web" and tcp["port"] == 80 and tcp["packets_logged"] == 2
    assert tcp["verdict"] == "dropped" and tcp["policies"] == ["cq/deny"]
    assert by_proto["udp"]["src"] == {"kind": "external", "ip": "203.0.113.0/24"}
    labels = {
        "namespace": "fq",
        "workload": "web",
        "direction": "ingress",
        "policy_mode": "enforce",
    }
    assert sample("podseg_dropped_flows_total", **labels) == 2
    assert sample("podseg_nflog_messages_total", result="truncated") >= 1


def test_counters_are_read_a_few_pods_per_request(tmp_path: pathlib.Path) -> None:
    """A ruleset apply waiting for the worker never waits behind every pod's counter read."""
    c, worker = make(tmp_path)
    pods = [pod("cb", f"p{i:02d}", "batch") for i in range(collector.COUNTER_BATCH * 2 + 3)]
    for p in pods:
        c.watch(p, TARGET, RS, applied=True)
        worker.values[p.key] = {ENFORCE: 0}
    asyncio.run(c.read_counters())
    for p in pods:
        worker.values[p.key] = {ENFORCE: 2}
    asyncio.run(c.read_counters())
    assert worker.requests == [collector.COUNTER_BATCH, collector.COUNTER_BATCH, 3] * 2
    labels = {
        "namespace": "cb",
        "workload": "batch",
        "direction": "ingress",
        "policy_mode": "enforce",
    }
    assert sample("podseg_dropped_packets_total", **labels) == 2 * len(pods)


def test_samples_become_workload_edges_in_the_flow_store(tmp_path: pathlib.Path) -> None:
    """Allowed samples are counted (metric) and, with drops, stored as workload edges: an
    allowed connection once (at the isolated destination's ingress, not at the source's
    egress), egress to an external address folded; accept prefixes are no malformed drops."""
    c, _worker = make(tmp_path)
    c.flow_store = flowstore.FlowStore(str(tmp_path / "flows.sqlite"))
    c.flow_store.start()
    web, db, bare = pod("eq", "web-1", "web"), pod("eq", "db-0-x", "db"), pod("eq", "dbg", "")
    for p in (web, db, bare):
        c.store.pods[p.key] = p
    c.store.policies["eq/db"] = model.NetworkPolicy(
        "eq", "db", model.LabelSelector(), policy_types=("Ingress",)
    )
    before = sample("podseg_allowed_flow_samples_total", direction="egress")
    unparseable = sample("podseg_nflog_messages_total", result="unparseable")
    c.handle(
        {
            "key": db.key,
            "packets": [
                ["podseg accept ingress", web.ips[0], db.ips[0], 6, 40000, 5432],
                ["podseg accept ingress", web.ips[0], db.ips[0], 6, 40001, 5432],
                ["podseg ingress policy enforce", bare.ips[0], db.ips[0], 6, 40002, 5432],
            ],
        }
    )
    c.handle(
        {
            "key": web.key,
            "packets": [
                ["podseg accept egress", web.ips[0], db.ips[0], 6, 40000, 5432],
                ["podseg accept egress", web.ips[0], "203.0.113.9", 6, 40003, 443],
            ],
        }
    )
    assert sample("podseg_allowed_flow_samples_total", direction="egress") - before == 2
    assert sample("podseg_nflog_messages_total", result="unparseable") == unparseable
    c.store_edges()
    c.flow_store.flush()
    got = {
        (
            json.dumps(f["src"], sort_keys=True),
            json.dumps(f["dst"], sort_keys=True),
            f["port"],
            f["verdict"],
        ): f["count"]
        for f in c.flow_store.query()
    }
    web_end = json.dumps({"namespace": "eq", "workload": "web"}, sort_keys=True)
    db_end = json.dumps({"namespace": "eq", "workload": "db"}, sort_keys=True)
    bare_end = json.dumps({"namespace": "eq", "workload": "dbg"}, sort_keys=True)
    external = json.dumps({"external": "203.0.113.0/24"}, sort_keys=True)
    assert got == {
        (web_end, db_end, 5432, "allowed"): 2,
        (bare_end, db_end, 5432, "dropped"): 1,
        (web_end, external, 443, "allowed"): 1,
    }
    asyncio.run(c.close())
    assert c.flow_store is None
