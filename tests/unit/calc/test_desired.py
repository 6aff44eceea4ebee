"""Desired state depends only on the final API snapshot (hypothesis): any interleaving of the
same watch events (with replays), or a single relist, gives every pod the same desired ruleset
(`calc.desired`: policies, Services and EndpointSlices with endpoint churn and readiness flips,
quarantine with forensic sources, the node guard with node address changes and exempt
namespaces)."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from agent.k8s import watch
from tests.support.strategies import (
    LABEL_VALUES,
    NAMESPACES,
    NODE_ADDRESSES,
    POD_NAMES,
    SETTINGS,
    feed,
    fingerprints,
    namespace_labels,
    node_obj,
    ns_obj,
    pod_labels,
    pod_obj,
    policy_obj,
    service_obj,
    slice_obj,
    valid_specs,
)

Event = tuple[str, str, dict[str, Any] | None]  # (resource, key, object or None = deleted)


@st.composite
def histories(draw: st.DrawFn) -> dict[tuple[str, str], list[dict[str, Any] | None]]:
    """Per object, the sequence of versions it goes through (None = deleted)."""
    out: dict[tuple[str, str], list[dict[str, Any] | None]] = {}
    rv = iter(range(1, 10_000))
    for node in ("node-1", "node-2"):
        out[("nodes", node)] = [
            node_obj(node, draw(st.lists(st.sampled_from(NODE_ADDRESSES), unique=True)), next(rv))
            for _ in range(draw(st.integers(1, 3)))
        ]
    for ns in NAMESPACES:
        out[("namespaces", ns)] = [ns_obj(ns, draw(namespace_labels()), next(rv))]
        out[("namespaces", ns)] += [
            ns_obj(ns, draw(namespace_labels()), next(rv)) for _ in range(draw(st.integers(0, 2)))
        ]
        for name in draw(st.lists(st.sampled_from(POD_NAMES), unique=True, max_size=3)):
            versions: list[dict[str, Any] | None] = []
            for _ in range(draw(st.integers(1, 3))):
                labels, annotations = draw(pod_labels())
                versions.append(pod_obj(ns, name, labels, next(rv), annotations))
            if draw(st.booleans()):
                versions.append(None)
            out[("pods", f"{ns}/{name}")] = versions
        for i in range(draw(st.integers(0, 2))):
            versions = [
                policy_obj(ns, f"p{i}", draw(valid_specs()), next(rv))
                for _ in range(draw(st.integers(1, 2)))
            ]
            if draw(st.booleans()):
                versions.append(None)
            out[("networkpolicies", f"{ns}/p{i}")] = versions
        for i in range(draw(st.integers(0, 2))):
            name = f"s{i}"
            svc_versions: list[dict[str, Any] | None] = [
                service_obj(ns, name, draw(st.sampled_from(LABEL_VALUES)), next(rv))
                for _ in range(draw(st.integers(1, 2)))
            ]
            if draw(st.booleans()):
                svc_versions.append(None)
            out[("services", f"{ns}/{name}")] = svc_versions
            slice_versions: list[dict[str, Any] | None] = [
                slice_obj(
                    ns,
                    name,
                    draw(st.lists(st.sampled_from(POD_NAMES), unique=True, max_size=3)),
                    draw(st.lists(st.booleans(), min_size=3, max_size=3)),
                    next(rv),
                )
                for _ in range(draw(st.integers(1, 3)))
            ]
            if draw(st.booleans()):
                slice_versions.append(None)
            out[("endpointslices", f"{ns}/{name}-1")] = slice_versions
    return out


def interleave(
    hist: dict[tuple[str, str], list[dict[str, Any] | None]], rnd: random.Random, replay: bool
) -> list[watch.WatchEvent]:
    """A random merge of the per-object histories (each object's own order kept)."""
    queues = {key: list(versions) for key, versions in hist.items()}
    last: dict[tuple[str, str], dict[str, Any] | None] = {}
    events: list[watch.WatchEvent] = []
    while queues:
        key = rnd.choice(sorted(queues))
        version = queues[key].pop(0)
        if not queues[key]:
            del queues[key]
        previous = last.get(key)
        if version is None:
            assert previous is not None
            events.append(watch.WatchEvent(key[0], "DELETED", previous, 0.0))
        else:
            kind = "MODIFIED" if previous is not None else "ADDED"
            events.append(watch.WatchEvent(key[0], kind, version, 0.0))
        last[key] = version
        if replay and rnd.random() < 0.2:
            events.append(events[-1])  # a duplicate delivery must change nothing
    return events


@SETTINGS
@given(hist=histories(), seed_a=st.integers(0, 2**32), seed_b=st.integers(0, 2**32))
def test_compile_is_independent_of_event_order(
    hist: dict[tuple[str, str], list[dict[str, Any] | None]], seed_a: int, seed_b: int
) -> None:
    one = feed(interleave(hist, random.Random(seed_a), replay=False))
    two = feed(interleave(hist, random.Random(seed_b), replay=True))
    final = {key: versions[-1] for key, versions in hist.items()}
    relist = feed(
        watch.Relist(kind, [obj for (k, _), obj in final.items() if k == kind and obj], "", 0.0)
        for kind in ("nodes", "namespaces", "pods", "networkpolicies", "services", "endpointslices")
    )
    expected = fingerprints(relist)
    assert fingerprints(one) == expected
    assert fingerprints(two, random.Random(seed_a)) == expected  # policy order too
