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


def test_holders_are_every_namespace_holding_all_the_addresses() -> None:
    index = netns.Index(
        [
            _cand("/run/netns/real", 1, ("eth0", ("198.18.1.2", "fd00:198:18::1:2"))),
            _cand("/proc/9/ns/net", 2, ("eth0", ("198.18.1.2", "fd00:198:18::1:2"))),
            _cand("/proc/10/ns/net", 3, ("eth0", ("198.18.1.2",))),  # only one of the two
        ]
    )
    found = index.holders(["198.18.1.2", "fd00:198:18::1:2"])
    assert [t.ident for t in found] == [("/proc/9/ns/net", 2), ("/run/netns/real", 1)]
    assert index.find(["198.18.1.2", "fd00:198:18::1:2"]) is None  # several: no single one
    assert index.holders([]) == ()


def test_a_target_carries_the_link_local_addresses_and_routes_of_its_interfaces() -> None:
    cand = netns.Candidate(
        "/run/netns/a",
        1,
        (
            netns.Interface("eth0", ("198.18.1.2", "fe80::1:2", "fd00:198:18::1:2")),
            netns.Interface("net1", ("198.19.0.2", "fe80::9")),
        ),
        (
            netns.Route("0.0.0.0/0", "198.18.0.1", "eth0"),
            netns.Route("198.18.0.1/32", None, "eth0"),
            netns.Route("198.19.0.0/24", None, "net1"),
        ),
    )
    (target,) = netns.Index([cand]).holders(["198.18.1.2"])
    assert target.interfaces == ("eth0",)
    assert target.link_local == ("fe80::1:2",)
    assert target.routes == (
        netns.Route("0.0.0.0/0", "198.18.0.1", "eth0"),
        netns.Route("198.18.0.1/32", None, "eth0"),
    )


def _pods(**ips: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    return {f"ns/{name}": value for name, value in ips.items()}


def test_a_decoy_holding_a_pods_addresses_gets_its_rules_too() -> None:
    index = netns.Index(
        [
            _cand("/run/netns/b", 2, ("eth0", ("198.18.1.2",))),
            _cand("/proc/66/ns/net", 66, ("eth0", ("198.18.1.2",))),  # a decoy
            _cand("/run/netns/c", 3, ("eth0", ("198.18.1.3",))),
        ]
    )
    placed = netns.place(index, _pods(b=("198.18.1.2",), c=("198.18.1.3",)))
    assert [(p.target.path, p.lockdown) for p in placed["ns/b"]] == [
        ("/proc/66/ns/net", False),
        ("/run/netns/b", False),
    ]
    assert [p.target.path for p in placed["ns/c"]] == ["/run/netns/c"]


def test_a_namespace_holding_two_pods_addresses_is_locked_down_once() -> None:
    # Pod a took b's address into its own namespace: a's namespace holds both pods.
    index = netns.Index(
        [
            _cand("/run/netns/a", 1, ("eth0", ("198.18.1.1", "198.18.1.2"))),
            _cand("/run/netns/b", 2, ("eth0", ("198.18.1.2",))),
        ]
    )
    placed = netns.place(index, _pods(a=("198.18.1.1",), b=("198.18.1.2",)))
    assert placed["ns/a"] == (netns.Placement(index.whole(("/run/netns/a", 1)), lockdown=True),)
    assert placed["ns/b"] == (netns.Placement(index.holders(["198.18.1.2"])[1]),)


def test_a_namespace_a_pod_was_placed_in_stays_its_claim_while_it_exists() -> None:
    # Pod a dropped its own address and took b's: its namespace is still a's (contested).
    before = netns.Target("/run/netns/a", 1, ("eth0",))
    index = netns.Index(
        [
            _cand("/run/netns/a", 1, ("eth0", ("198.18.1.2",))),
            _cand("/run/netns/b", 2, ("eth0", ("198.18.1.2",))),
        ]
    )
    pods = _pods(a=("198.18.1.1",), b=("198.18.1.2",))
    placed = netns.place(index, pods, {"ns/a": [before]})
    assert [(p.target.path, p.lockdown) for p in placed["ns/a"]] == [("/run/netns/a", True)]
    assert [(p.target.path, p.lockdown) for p in placed["ns/b"]] == [("/run/netns/b", False)]
    # Alone there, it keeps its rules on its interfaces; gone, the claim goes.
    alone = netns.Index([_cand("/run/netns/a", 1, ("eth0", ("198.18.9.9",)))])
    assert netns.place(alone, pods, {"ns/a": [before]})["ns/a"] == (
        netns.Placement(netns.Target("/run/netns/a", 1, ("eth0",))),
    )
    assert netns.place(netns.Index([]), pods, {"ns/a": [before]})["ns/a"] == ()
