"""Leader election over Leases: one leader at a time, takeover only after the Lease stopped
changing for its duration (on the taker's clock), a conflicting write loses, release hands
over at once. The API is an in-memory stand-in with resourceVersion checks."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agent.k8s import apiclient, lease


class FakeApi:
    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.rv = 0
        self.race: dict[str, Any] | None = None  # written by "someone else" just before a PUT

    def get(self, api: Any, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.leases.get(name)
        return copy.deepcopy(found) if found else None

    def write(self, api: Any, namespace: str, body: dict[str, Any], *, create: bool) -> Any:
        name = body["metadata"]["name"]
        if self.race is not None:
            self._store(name, self.race)
            self.race = None
        current = self.leases.get(name)
        if create and current is not None:
            raise apiclient.ApiError(409, "Conflict")
        if not create and (
            current is None
            or body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]
        ):
            raise apiclient.ApiError(409, "Conflict")
        self._store(name, body)
        return self.leases[name]

    def _store(self, name: str, body: dict[str, Any]) -> None:
        self.rv += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.rv)
        self.leases[name] = stored


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    api = FakeApi()
    monkeypatch.setattr(lease, "get", api.get)
    monkeypatch.setattr(lease, "write", api.write)
    return api


def _elector(name: str, clock: Clock) -> lease.Elector:
    return lease.Elector(None, "podseg-system", "l", name, duration=10, clock=clock)  # type: ignore[arg-type]


def test_first_comer_leads_and_the_other_waits_for_the_lease_to_go_stale(fake: FakeApi) -> None:
    clock = Clock()
    one, two = _elector("node-1", clock), _elector("node-2", clock)
    assert one.step() and one.leading
    assert not two.step()
    clock.now += 5
    assert one.step()  # renewed: the record changed, node-2 starts counting again
    assert not two.step()
    clock.now += 9  # node-1 stops renewing; 9 s is not yet the 10 s duration
    assert not two.step()
    clock.now += 2
    assert two.step() and two.leading
    assert fake.leases["l"]["spec"]["holderIdentity"] == "node-2"
    assert fake.leases["l"]["spec"]["leaseTransitions"] == 1
    assert not one.leading  # its own renewal is older than the duration
    assert not one.step()  # and it sees node-2's fresh record


def test_a_conflicting_write_loses(fake: FakeApi) -> None:
    clock = Clock()
    one = _elector("node-1", clock)
    fake.race = lease.body(
        "podseg-system", "l", {"holderIdentity": "node-9", "leaseDurationSeconds": 10}
    )
    assert not one.step()  # node-9 created it first: our create is refused
    assert fake.leases["l"]["spec"]["holderIdentity"] == "node-9"


def test_release_hands_over_at_once(fake: FakeApi) -> None:
    clock = Clock()
    one, two = _elector("node-1", clock), _elector("node-2", clock)
    assert one.step()
    assert not two.step()
    one.release()
    assert not one.leading and fake.leases["l"]["spec"]["holderIdentity"] == ""
    assert two.step()  # no wait for the duration


def test_a_garbled_duration_falls_back_to_ours(fake: FakeApi) -> None:
    clock = Clock()
    fake._store(
        "l",
        lease.body("podseg-system", "l", {"holderIdentity": "x", "leaseDurationSeconds": "soon"}),
    )
    one = _elector("node-1", clock)
    assert not one.step()
    clock.now += 11
    assert one.step()
