"""What a derived patch costs and what a kept rendering holds, counted rather than timed.

A label flip changes one element of a couple of a pod's sets; the derive must hash only the
sets it changed (`render_nft.with_sets`: a digest per set), not the text of every set of the
pod's ten policies, and the renderings the agent keeps for the next patch must not each hold a
whole script: pods of the same peers share their element texts."""

from __future__ import annotations

import gc
import hashlib
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from agent.calc import intervals, ruleset
from agent.dataplane.nft import fastpatch
from agent.dataplane.nft import render as render_nft

IFACES = ("eth0",)
BASE = 0xC612_0000  # 198.18.0.0
POLICIES = 10
PEERS = 1_000


def _peers(skip: int | None = None) -> tuple[ruleset.PeerPort, ...]:
    triples = [
        (ruleset.AddrRange(4, BASE + 4 * n, BASE + 4 * n + 1), 6, ruleset.PortRange(8080, 8080))
        for n in range(PEERS)
        if n != skip
    ]
    return intervals.canonical_peer_ports(triples, exclude=())


def _ruleset(pod: str, flipped: tuple[ruleset.PeerPort, ...], others: Any) -> ruleset.PodRuleset:
    """Ten policies: the first one's peers are `flipped`, the others' (and the union) are
    `others`, which holds `flipped`."""
    names = tuple(f"x/p{n}" for n in range(POLICIES))
    per_policy = (
        ruleset.PolicyPeers(names[0], (), flipped),
        *(ruleset.PolicyPeers(name, (), others) for name in names[1:]),
    )
    d = ruleset.DirectionRuleset(True, (), others, names, per_policy)
    return ruleset.PodRuleset("x", pod, ingress=d)


class _Counting:
    """`hashlib` for the renderer, counting the bytes it hashes."""

    def __init__(self) -> None:
        self.bytes = 0

    def sha256(self, data: bytes = b"") -> Any:
        counter = self
        inner = hashlib.sha256(data)
        counter.bytes += len(data)

        class _Hash:
            def update(self, more: bytes) -> None:
                counter.bytes += len(more)
                inner.update(more)

            def digest(self) -> bytes:
                return inner.digest()

            def hexdigest(self) -> str:
                return inner.hexdigest()

        return _Hash()


def test_a_derive_hashes_only_the_sets_it_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    others = _peers()
    old_rs = _ruleset("web", _peers(), others)
    new_rs = _ruleset("web", _peers(skip=500), others)
    old = render_nft.render(old_rs, IFACES)
    counting = _Counting()
    monkeypatch.setattr(render_nft, "hashlib", counting)
    derived = fastpatch.derive(old_rs, old, new_rs, IFACES)
    monkeypatch.undo()
    assert derived is not None and derived.deleted == 1
    assert derived.rendered.fingerprint == render_nft.render(new_rs, IFACES).fingerprint
    changed = [c.name for c in derived.changes]
    assert changed == ["ingress_p0_tcp_8080_v4"]
    # the changed set's elements (under 16 bytes each) and the pieces' digests, not the
    # text of the ten policies' sets
    whole = len(old.script)
    assert whole > POLICIES * PEERS * 10
    assert counting.bytes < PEERS * 16 + 8_192 < whole // 4, (counting.bytes, whole)


def _held(root: object) -> Iterator[object]:
    """Every object reachable from `root` (once each), as the garbage collector sees them;
    classes, modules and functions are shared by everything and left out."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, type | type(sys) | type(_held)):
            continue
        seen.add(id(obj))
        yield obj
        todo.extend(gc.get_referents(obj))


def _size(*roots: object) -> int:
    return sum(sys.getsizeof(o) for o in _held(roots))


def test_pods_of_the_same_peers_keep_no_script_of_their_own() -> None:
    render_nft.clear_caches()
    others = _peers()
    kept = [render_nft.render(_ruleset(f"web-{n}", others, others), IFACES) for n in range(10)]
    one, ten = _size(kept[0]), _size(*kept)
    script = len(kept[0].script)
    assert script > POLICIES * PEERS * 10
    # each further pod adds its tables' rules and digests (a few dozen), not a script of its
    # own: under a quarter of the script's size
    assert ten - one < 9 * (script // 4), (one, ten, script)


def test_pods_of_the_same_peers_share_one_splice(monkeypatch: pytest.MonkeyPatch) -> None:
    """One flip seen by ten pods holding the same peer tuples: the changed stretch is sorted
    into sets, and the changed set spliced, formatted and hashed, once; the ten derived
    renderings hold the very same elements (so they stay shared for the next flip), and each
    is still exactly a fresh rendering."""
    render_nft.clear_caches()
    fastpatch.clear_cache()
    flipped, others, after = _peers(), _peers(), _peers(skip=500)
    pods = [f"web-{n}" for n in range(10)]
    olds = {pod: render_nft.render(_ruleset(pod, flipped, others), IFACES) for pod in pods}
    hashed, derived, sorts = [], [], []
    real_add = fastpatch._Sorted.add

    def add(self: Any, part: Any, side: int) -> None:
        sorts.append(pod)
        real_add(self, part, side)

    for pod in pods:
        counting = _Counting()
        monkeypatch.setattr(render_nft, "hashlib", counting)
        monkeypatch.setattr(fastpatch._Sorted, "add", add)
        found = fastpatch.derive(
            _ruleset(pod, flipped, others), olds[pod], _ruleset(pod, after, others), IFACES
        )
        monkeypatch.undo()
        assert found is not None and found.deleted == 1
        fresh = render_nft.render(_ruleset(pod, after, others), IFACES)
        assert found.rendered.fingerprint == fresh.fingerprint
        assert found.rendered.script == fresh.script
        hashed.append(counting.bytes)
        derived.append(found.rendered)
    name = "ingress_p0_tcp_8080_v4"
    held = [next(s for s in r.tables[0].sets if s.name == name) for r in derived]
    assert all(s.elements is held[0].elements for s in held)
    # the first pod sorts the changed stretch and hashes the changed set's elements; the
    # others only hash the pieces' digests
    assert set(sorts) == {pods[0]}
    assert hashed[0] > PEERS * 10
    assert max(hashed[1:]) < hashed[0] // 4, hashed
