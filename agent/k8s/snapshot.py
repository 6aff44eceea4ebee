"""One consistent-enough view of the cluster for commands run by an operator: every kind the
agent mirrors, listed once into a store (`podseg explain` computes from it exactly what an
agent would)."""

from __future__ import annotations

from agent import store
from agent.k8s import adminwatch, rest, watch


def load(api: rest.Api) -> store.Store:
    """A store holding a LIST of every kind (in sync, as an agent's after start), the
    network-policy-api kinds included where the cluster serves them."""
    cluster = store.Store()
    for resource in rest.PATHS:
        cluster.apply(watch.list_all(resource, rest.lister(api, resource)), store.Change())
    for resource in sorted(adminwatch.served(adminwatch.api_get(api))):
        cluster.expect_admin(resource)
        cluster.apply(watch.list_all(resource, rest.lister(api, resource)), store.Change())
    return cluster
