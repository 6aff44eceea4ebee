"""Odd API objects through the whole path (watch event -> store -> pass) never stop the agent:
each kind fuzzed with hypothesis, against a real store and Reconciler and the in-memory fake
dataplane. An unreadable object is reported once per version and leaves the last readable
version in effect; every other pod stays enforced."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import metrics, store
from agent.sync import loop as sync_loop
from agent.sync import pod as sync_pod
from tests.support import cluster as fx
from tests.support import fake_dataplane

KINDS = ("pods", "namespaces", "networkpolicies", "nodes", "services", "endpointslices")

leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**33), 2**33),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.sampled_from(("198.18.9.9", "::1", "TCP", "x", "None", "80", "10.0.0.0/8")),
)
json_any = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=16,
)
FIELDS = (
    "metadata",
    "spec",
    "status",
    "addressType",
    "endpoints",
    "ports",
    "labels",
    "podIPs",
    "containers",
    "addresses",
    "ingress",
    "egress",
    "podSelector",
)


@st.composite
def odd_objects(draw: st.DrawFn) -> Any:
    """Mostly object-shaped dicts with a readable name and odd parts; sometimes anything."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_any)
    obj: dict[str, Any] = {
        key: draw(json_any) for key in draw(st.lists(st.sampled_from(FIELDS), unique=True))
    }
    if draw(st.booleans()):
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        obj["metadata"] = {**meta, "name": "odd", "namespace": "shop", "resourceVersion": "7"}
    return obj


def _node() -> tuple[sync_loop.Reconciler, fake_dataplane.FakeDataplane]:
    dataplane = fake_dataplane.FakeDataplane()
    dataplane.add("198.18.1.1")
    cluster = fx.synced_store(
        pods=[fx.pod("shop", "web", "198.18.1.1", labels={"app": "web"})],
        namespaces=[fx.namespace("shop")],
        policies=[fx.policy("shop", "deny", {"podSelector": {}, "policyTypes": ["Ingress"]})],
        nodes=[fx.node("node-1", "198.18.0.1")],
    )

    class Quiet:
        def on_pod(self, *args: Any, **kwargs: Any) -> None: ...

        def warn(self, **kwargs: Any) -> None: ...

    rec = sync_loop.Reconciler(fx.settings(), cluster, dataplane, Quiet())
    asyncio.run(rec.reconcile(None))
    return rec, dataplane


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), obj=odd_objects(), relist=st.booleans())
def test_an_odd_object_of_any_kind_never_stops_a_pass(kind: str, obj: Any, relist: bool) -> None:
    rec, dataplane = _node()
    change = store.Change()
    if relist:
        rec.store.apply(fx.relist(kind, [*(_current(rec.store, kind)), obj]), change)
    else:
        rec.store.apply(fx.event(kind, "MODIFIED", obj), change)
    asyncio.run(rec.reconcile(change))  # must not raise
    web = rec.pods.get("shop/web")
    if web is not None and web.target is not None:
        assert web.state is sync_pod.Status.ENFORCED
        assert dataplane.holding("198.18.1.1").fingerprint is not None


def _current(cluster: store.Store, kind: str) -> list[dict[str, Any]]:
    """Raw forms of what the synced store holds of `kind` (as a relist would repeat them)."""
    if kind == "pods":
        return [fx.pod("shop", "web", "198.18.1.1", labels={"app": "web"})]
    if kind == "namespaces":
        return [fx.namespace("shop")]
    if kind == "networkpolicies":
        return [fx.policy("shop", "deny", {"podSelector": {}, "policyTypes": ["Ingress"]})]
    if kind == "nodes":
        return [fx.node("node-1", "198.18.0.1")]
    return []


def _malformed(resource: str) -> float:
    return (
        metrics.REGISTRY.get_sample_value("podseg_malformed_objects_total", {"resource": resource})
        or 0.0
    )


def test_an_unreadable_version_is_reported_once_and_the_last_readable_one_stays() -> None:
    rec, dataplane = _node()
    before = _malformed("pods")
    good = rec.store.pods["shop/web"]
    broken = fx.pod("shop", "web", "198.18.1.1", labels={"app": "web"}, version="9")
    broken["spec"] = ["not", "an", "object"]
    for _ in range(3):  # the same version delivered again (a replayed event, a relist)
        change = store.Change()
        rec.store.apply(fx.event("pods", "MODIFIED", broken), change)
        asyncio.run(rec.reconcile(change))
    assert _malformed("pods") == before + 1
    assert rec.store.pods["shop/web"] is good  # not deleted: its rules are not swept
    assert rec.pods["shop/web"].state is sync_pod.Status.ENFORCED
    # A relist holding the broken version keeps the pod too.
    change = store.Change()
    rec.store.apply(fx.relist("pods", [broken]), change)
    asyncio.run(rec.reconcile(change))
    assert rec.store.pods["shop/web"] is good and _malformed("pods") == before + 1
    assert dataplane.holding("198.18.1.1").fingerprint is not None
