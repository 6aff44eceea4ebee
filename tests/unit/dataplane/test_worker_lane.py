"""The lane of a batch part (`agent.dataplane.worker.lane`): the namespace at its path, so two
paths of one namespace share a lane; a missing path a lane of its own; a part about no single
namespace a barrier. No root: the process's own namespace files stand in."""

from __future__ import annotations

import os

from agent.dataplane import protocol, worker


def part(request: protocol.Request[object]) -> protocol.Request[object]:
    """The part as the worker reads it off the wire."""
    return protocol.decode_request(protocol.encode_request(request))


def test_two_paths_of_one_namespace_share_a_lane() -> None:
    one = worker.lane(part(protocol.Glance("/proc/self/ns/net", None)))
    other = worker.lane(part(protocol.Commit("/proc/thread-self/ns/net", 1, "")))
    st = os.stat("/proc/self/ns/net")
    assert one == other == (st.st_dev, st.st_ino)


def test_a_missing_namespace_has_a_lane_of_its_own_and_the_rest_are_barriers() -> None:
    gone = worker.lane(part(protocol.Commit("/run/netns/psg-never-there", 5, "")))
    assert gone == ("missing", "/run/netns/psg-never-there")
    assert worker.lane(part(protocol.Scan("/run/netns"))) is None
    assert worker.lane(part(protocol.ReadCounters(()))) is None
    assert worker.lane(part(protocol.Batch((protocol.Ping(),)))) is None
    assert worker.lane(protocol.ProtocolError("a part that did not read")) is None
