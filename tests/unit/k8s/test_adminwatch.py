"""Discovery of the network-policy-api kinds against a fake API: which kinds are served, and
the AdminWatch reaction (reflectors started and stopped, the store told, one info line when
kinds are missing, no change when discovery fails)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog.testing

from agent import store
from agent.k8s import adminwatch, rest, watch

GROUP = "/apis/policy.networking.k8s.io"


def _group(*versions: str) -> dict[str, Any]:
    entries = [{"groupVersion": f"policy.networking.k8s.io/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "name": "policy.networking.k8s.io", "versions": entries}


def _resources(*names: str) -> dict[str, Any]:
    return {"kind": "APIResourceList", "resources": [{"name": n} for n in names]}


class FakeApi:
    """Discovery documents by path; a missing path is a 404 (None); `fail` raises."""

    def __init__(self, docs: dict[str, Any]) -> None:
        self.docs = docs
        self.fail = False
        self.paths: list[str] = []

    def __call__(self, path: str) -> Any:
        self.paths.append(path)
        if self.fail:
            raise ConnectionError("connection refused")
        return self.docs.get(path)


ALL_SERVED = {
    GROUP: _group("v1beta1", "v1alpha2", "v1alpha1"),
    f"{GROUP}/v1alpha2": _resources("clusternetworkpolicies", "clusternetworkpolicies/status"),
    f"{GROUP}/v1alpha1": _resources("adminnetworkpolicies", "baselineadminnetworkpolicies"),
}


def test_served_reads_group_and_versions() -> None:
    assert adminwatch.served(FakeApi({})) == frozenset()
    assert adminwatch.served(FakeApi(ALL_SERVED)) == frozenset(rest.ADMIN_VERSIONS)
    only_cnp = FakeApi(
        {GROUP: _group("v1alpha2"), f"{GROUP}/v1alpha2": ALL_SERVED[f"{GROUP}/v1alpha2"]}
    )
    assert adminwatch.served(only_cnp) == {"clusternetworkpolicies"}
    assert f"{GROUP}/v1alpha1" not in only_cnp.paths  # a version the group lacks is not asked
    # The group lists a version whose resource list is gone (a race with a CRD delete).
    racing = FakeApi({GROUP: _group("v1alpha1")})
    assert adminwatch.served(racing) == frozenset()
    # Only v1beta1 served: the agent reads v1alpha2, so it watches nothing.
    beta = FakeApi(
        {GROUP: _group("v1beta1"), f"{GROUP}/v1beta1": _resources("clusternetworkpolicies")}
    )
    assert adminwatch.served(beta) == frozenset()


class FakeReflector:
    def __init__(self, resource: str) -> None:
        self.resource = resource
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True


def _watch(api: FakeApi) -> tuple[adminwatch.AdminWatch, store.Store, list[Any], list[Any]]:
    cluster = store.Store()
    reflectors: list[Any] = []
    delivered: list[Any] = []

    def make(resource: str, on_failure: Any) -> Any:
        return FakeReflector(resource)

    admin = adminwatch.AdminWatch(api, cluster, reflectors, make, delivered.append, period=0.05)
    return admin, cluster, reflectors, delivered


def test_without_crds_one_info_line_and_in_sync() -> None:
    async def main() -> None:
        api = FakeApi({})
        admin, cluster, reflectors, delivered = _watch(api)
        with structlog.testing.capture_logs() as logs:
            admin.start()
            await admin.refresh()
            for _ in range(3):
                assert await admin.refresh()
        # One empty relist of an unserved kind, once: it wakes a reconciler whose LISTs were
        # all done before discovery answered (else it would wait for its next resync).
        assert reflectors == [] and len(delivered) == 1
        assert isinstance(delivered[0], watch.Relist) and delivered[0].items == []
        for kind in store.KINDS:
            cluster.apply(watch.Relist(kind, [], "1", 0.0), store.Change())
        woken = store.Change()
        cluster.apply(delivered[0], woken)
        assert cluster.in_sync and not woken
        infos = [e for e in logs if e["event"] == "admin_kinds_not_served"]
        assert len(infos) == 1 and infos[0]["log_level"] == "info"
        assert infos[0]["kinds"] == sorted(rest.ADMIN_VERSIONS)
        assert not [e for e in logs if e["log_level"] in ("warning", "error")]

    asyncio.run(main())


def test_crds_installed_later_then_deleted() -> None:
    async def main() -> None:
        api = FakeApi({})
        admin, cluster, reflectors, delivered = _watch(api)
        admin.start()
        await admin.refresh()
        delivered.clear()  # the wake-up of the first discovery (see the test above)
        api.docs = dict(ALL_SERVED)
        run = asyncio.create_task(admin.run())  # the periodic re-check
        for _ in range(200):
            if len(reflectors) == 3:
                break
            await asyncio.sleep(0.01)
        assert sorted(r.resource for r in reflectors) == sorted(rest.ADMIN_VERSIONS)
        assert all(r.started for r in reflectors)
        assert cluster.admin_expected == set(rest.ADMIN_VERSIONS)
        first = list(reflectors)
        # The CNP CRD is deleted; a 404 of its reflector triggers a check at once.
        api.docs = {GROUP: _group("v1alpha1"), f"{GROUP}/v1alpha1": ALL_SERVED[f"{GROUP}/v1alpha1"]}
        with structlog.testing.capture_logs() as logs:
            admin._reflector_failed("clusternetworkpolicies", 404)
            for _ in range(200):
                if len(reflectors) == 2:
                    break
                await asyncio.sleep(0.01)
        run.cancel()
        [cnp] = [r for r in first if r.resource == "clusternetworkpolicies"]
        assert cnp.stopped and cnp not in reflectors
        assert "clusternetworkpolicies" not in cluster.admin_expected
        [relist] = delivered
        assert isinstance(relist, watch.Relist) and relist.resource == "clusternetworkpolicies"
        assert relist.items == []
        events = [e["event"] for e in logs]
        assert "admin_kind_not_served_any_more" in events
        assert "admin_kinds_not_served" in events

    asyncio.run(main())


def test_failed_discovery_keeps_state_and_blocks_sync_at_start() -> None:
    async def main() -> None:
        api = FakeApi(dict(ALL_SERVED))
        api.fail = True
        admin, cluster, reflectors, _ = _watch(api)
        with structlog.testing.capture_logs() as logs:
            admin.start()
            await admin.refresh()
            assert not await admin.refresh()
        assert [e["event"] for e in logs] == ["admin_discovery_failed"]  # once per streak
        assert not cluster.admin_known and not cluster.in_sync
        api.fail = False
        assert await admin.refresh()
        assert cluster.admin_known and len(reflectors) == 3
        api.fail = True
        api.docs = {}
        assert not await admin.refresh()
        assert len(reflectors) == 3  # an unanswered check changes nothing

    asyncio.run(main())


@pytest.mark.parametrize("code", [None, 500, 403])
def test_only_404_wakes_discovery(code: int | None) -> None:
    async def main() -> None:
        admin, *_ = _watch(FakeApi({}))
        admin.start()
        await admin.refresh()
        admin._reflector_failed("adminnetworkpolicies", code)
        await asyncio.sleep(0)
        assert not admin._wake.is_set()

    asyncio.run(main())


def test_a_forbidden_kind_never_holds_the_store_out_of_sync() -> None:
    """Discovery works (every authenticated user may read it) but the agent's role lacks the
    kind: its LIST answers 403. The kind is left out (one warning), so the store is in sync,
    and tried again at the next discovery check, quietly."""

    async def main() -> None:
        admin, cluster, reflectors, delivered = _watch(FakeApi(dict(ALL_SERVED)))
        admin.start()
        await admin.refresh()
        for kind in store.KINDS:
            cluster.apply(watch.Relist(kind, [], "1", 0.0), store.Change())
        for kind in ("adminnetworkpolicies", "baselineadminnetworkpolicies"):
            cluster.apply(watch.Relist(kind, [], "1", 0.0), store.Change())
        assert not cluster.in_sync  # waiting for the ClusterNetworkPolicy LIST
        with structlog.testing.capture_logs() as logs:
            admin._reflector_failed("clusternetworkpolicies", 403)
            admin._reflector_failed("clusternetworkpolicies", 403)
            await asyncio.sleep(0.01)
        assert cluster.in_sync
        assert "clusternetworkpolicies" not in {r.resource for r in reflectors}
        assert [e["event"] for e in logs] == ["admin_kind_forbidden"]
        assert [d.resource for d in delivered] == ["clusternetworkpolicies"]
        with structlog.testing.capture_logs() as logs:
            assert await admin.refresh()  # the next check tries again
            admin._reflector_failed("clusternetworkpolicies", 403)
            await asyncio.sleep(0.01)
        assert not [e for e in logs if e["log_level"] != "debug"]
        assert cluster.in_sync

    asyncio.run(main())
