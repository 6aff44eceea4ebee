"""The derived element patch of admin-tier sets (`nft.tierpatch` through `nft.fastpatch`): an
edit of a tier rule's ports or peers is derived (rendering equal to a fresh `render`, the
transaction equal to `incremental.patch` of the two renderings, the same change as netlink
numbers), and anything that changes the tier chains is left to the render path."""

from __future__ import annotations

import dataclasses
import ipaddress

from agent.calc import ruleset
from agent.dataplane import protocol
from agent.dataplane.nft import fastpatch, incremental
from agent.dataplane.nft import render as render_nft

IFACES = ("eth0",)
TCP, UDP = 6, 17


def _addr(text: str) -> ruleset.AddrRange:
    net = ipaddress.ip_network(text)
    return ruleset.AddrRange(net.version, int(net.network_address), int(net.broadcast_address))


def _service(protocol_: int, first: int, last: int | None = None) -> ruleset.ProtoPorts:
    return ruleset.ProtoPorts(protocol_, ruleset.PortRange(first, first if last is None else last))


def _factored(
    addrs: list[str], services: list[ruleset.ProtoPorts], action: ruleset.TierAction
) -> ruleset.TierEntry:
    ranges = tuple(sorted(map(_addr, addrs), key=lambda r: (r.family, r.first)))
    ports = tuple(sorted(services, key=lambda p: (p.protocol, p.ports.first)))
    elements = tuple(
        sorted(ruleset.PeerPort(r, p.protocol, p.ports) for r in ranges for p in ports)
    )
    return ruleset.TierEntry("ClusterNetworkPolicy/a", "r", action, elements, ranges, ports)


def _named(pairs: list[tuple[str, int]]) -> ruleset.TierEntry:
    """Not a product (named ports resolved per pod): one `addr . proto . port` set."""
    elements = tuple(
        sorted(ruleset.PeerPort(_addr(a), TCP, ruleset.PortRange(p, p)) for a, p in pairs)
    )
    return ruleset.TierEntry("ClusterNetworkPolicy/n", "named", ruleset.TierAction.ACCEPT, elements)


def _rs(
    admin: tuple[ruleset.TierEntry, ...], baseline: tuple[ruleset.TierEntry, ...] = ()
) -> ruleset.PodRuleset:
    return ruleset.PodRuleset(
        "app",
        "local",
        ingress=ruleset.DirectionRuleset(admin=admin, baseline=baseline),
        egress=ruleset.DirectionRuleset(admin=admin),
    )


PEERS = ["198.18.1.1/32", "198.18.2.0/24", "fd00:198:18::5/128"]
DENY, PASS = ruleset.TierAction.DENY, ruleset.TierAction.PASS


def _derive(old_rs: ruleset.PodRuleset, new_rs: ruleset.PodRuleset) -> fastpatch.Derived:
    old = render_nft.render(old_rs, IFACES)
    new = render_nft.render(new_rs, IFACES)
    derived = fastpatch.derive(old_rs, old, new_rs, IFACES)
    assert derived is not None
    assert derived.rendered == new
    assert derived.script == incremental.patch(old, new)
    assert (derived.deleted, derived.added) == incremental.counts(old, new)
    return derived


def _changes(derived: fastpatch.Derived) -> dict[str, protocol.SetChange]:
    return {c.name: c for c in derived.changes}


def test_a_port_edit_is_a_derived_patch_of_the_ports_set() -> None:
    before = _rs((_factored(PEERS, [_service(TCP, 22)], DENY), _factored(PEERS, [], PASS)))
    after = _rs((_factored(PEERS, [_service(TCP, 23, 25)], DENY), _factored(PEERS, [], PASS)))
    changes = _changes(_derive(before, after))
    assert set(changes) == {"ingress_admin0_p", "egress_admin0_p"}
    assert changes["ingress_admin0_p"] == protocol.SetChange(
        "ingress_admin0_p", 4, "services", ((TCP, 22, 22),), ((TCP, 23, 25),)
    )


def test_a_peer_edit_is_a_derived_patch_of_the_address_sets() -> None:
    services = [_service(TCP, 80), _service(UDP, 53)]
    before = _rs((_factored(PEERS, services, DENY),), (_factored(PEERS[:1], services, DENY),))
    grown = [*PEERS, "198.18.9.0/25", "fd00:198:18::/127"]
    after = _rs((_factored(grown[1:], services, DENY),), (_factored(PEERS[:1], services, DENY),))
    changes = _changes(_derive(before, after))
    assert set(changes) == {f"{d}_admin0_a{f}" for d in ("ingress", "egress") for f in (4, 6)}
    v4 = changes["ingress_admin0_a4"]
    assert v4.kind == "addrproto" and v4.family == 4
    gone, added = _addr("198.18.1.1/32"), _addr("198.18.9.0/25")
    assert v4.deleted == ((gone.first, gone.last),) and v4.added == ((added.first, added.last),)
    v6 = changes["ingress_admin0_a6"]
    assert v6.family == 6 and v6.deleted == () and len(v6.added) == 1


def test_other_protocols_and_named_ports_are_patched_too() -> None:
    other = ruleset.ProtoPorts(ruleset.OTHER_PROTOCOL, ruleset.PortRange(0, 65535))
    before = _rs((_factored(PEERS, [_service(TCP, 80)], DENY), _named([("198.18.1.1/32", 8080)])))
    after = _rs(
        (
            _factored(PEERS, [_service(TCP, 80), other], DENY),
            _named([("198.18.1.1/32", 8081), ("198.18.1.2/32", 8080)]),
        )
    )
    changes = _changes(_derive(before, after))
    assert changes["ingress_admin0_other4"].kind == "addrproto"
    assert len(changes["ingress_admin0_other4"].added) == 2
    named = changes["ingress_admin1_ports4"]
    assert named.kind == "ports" and len(named.deleted) == 1 and len(named.added) == 2


def test_a_change_of_the_tier_chains_is_left_to_the_render_path() -> None:
    entry = _factored(PEERS, [_service(TCP, 22)], DENY)
    rs = _rs((entry,))
    old = render_nft.render(rs, IFACES)
    others = [
        _rs((dataclasses.replace(entry, action=PASS),)),  # another verdict
        _rs((entry, entry)),  # one more entry
        _rs((dataclasses.replace(entry, rule="other"),)),
        _rs((dataclasses.replace(entry, addrs=None, ports=()),)),  # no longer a product
        _rs((), (entry,)),  # another tier
    ]
    for other in others:
        assert fastpatch.derive(rs, old, other, IFACES) is None
