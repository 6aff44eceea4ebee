"""Finding a pod's namespace by its addresses (pure matching rules)."""

from __future__ import annotations

from agent.dataplane import netns


def _cand(path: str, ino: int, *ifaces: tuple[str, tuple[str, ...]]) -> netns.Candidate:
    return netns.Candidate(path, ino, tuple(netns.Interface(n, a) for n, a in ifaces))


def test_all_pod_ips_in_one_namespace_is_found_with_its_interfaces() -> None:
    index = netns.Index(
        [
            _cand("/run/netns/a", 1, ("eth0", ("198.18.1.2", "fd00:198:18::1:2"))),
            _cand("/proc/9/ns/net", 2, ("eth0", ("198.18.1.3",))),
        ]
    )
    target = index.find(["198.18.1.2", "fd00:198:18:0::1:2"])  # non-canonical v6 spelling
    assert target == netns.Target("/run/netns/a", 1, ("eth0",))
    assert index.find(["198.18.1.3"]) == netns.Target("/proc/9/ns/net", 2, ("eth0",))


def test_missing_split_or_ambiguous_addresses_match_nothing() -> None:
    index = netns.Index(
        [
            _cand("/run/netns/a", 1, ("eth0", ("198.18.1.2",))),
            _cand("/run/netns/b", 2, ("eth0", ("198.18.1.3", "198.18.1.9"))),
            _cand("/run/netns/c", 3, ("eth0", ("198.18.1.9",))),
        ]
    )
    assert index.find([]) is None
    assert index.find(["198.18.1.4"]) is None
    assert index.find(["198.18.1.2", "198.18.1.3"]) is None  # split over two namespaces
    assert index.find(["198.18.1.9"]) is None  # in two namespaces: ambiguous
    assert index.ambiguous == frozenset({"198.18.1.9"})
