"""The chaos run at CI size (scripts/chaos.py runs the full 1000 events): random changes and
random agent kills; every table whole after each kill, the deny prober never gets through, and
the end state equals a from-scratch compile of the final API state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbed import chaos
from testbed.sandbox import cluster as sandbox_cluster

EVENTS = 300
KILL_EVERY = 15  # on average: ~20 kills in the CI run


@pytest.fixture
def cluster() -> Iterator[sandbox_cluster.SandboxCluster]:
    with sandbox_cluster.SandboxCluster(nodes=("node-1",)) as cl:
        chaos.build(cl)
        cl.start_agent("node-1", ["--resync-period", "1"])
        yield cl


def test_chaos_with_random_kills(cluster: sandbox_cluster.SandboxCluster) -> None:
    stats = chaos.Chaos(cluster, seed=20261128).run(EVENTS, KILL_EVERY)
    print("\n" + stats.line())
    assert stats.deny_got_through == 0
    assert stats.deny_probes > 0
    assert sum(stats.kills.values()) > 0
