"""Admin-tier entries and the incremental update: a rule without named ports keeps its
addresses and its ports in separate sets, so editing its ports patches the ports set only
(a few elements, whatever the number of peers), and a peer that comes changes one address."""

from __future__ import annotations

import dataclasses

from agent import model
from agent.calc import intervals, ruleset
from agent.dataplane.nft import incremental
from agent.dataplane.nft import render as render_nft
from agent.tiers import compile as tiers_compile
from agent.tiers import model as tiers
from tests.support import admintier

LOCAL = model.Pod("app", "local", node_name="n1", ips=("10.9.0.1",))


def _peers(count: int) -> list[tiers_compile.Peer]:
    out = []
    for i in range(count):
        pod = model.Pod("t0", f"p{i}", node_name="n2", ips=(f"10.1.{i // 100}.{2 * (i % 100)}",))
        labels = {"team": "t0", "kubernetes.io/metadata.name": "t0"}
        out.append(tiers_compile.Peer((intervals.address_range(pod.ips[0]),), pod, labels))
    return out


def _rendered(port: int, peers: list[tiers_compile.Peer]) -> render_nft.Rendered:
    rule = tiers.Rule(
        "no-ssh",
        tiers.DENY,
        (tiers.Peer(namespaces=model.LabelSelector((("team", "t0"),))),),
        (tiers.Port("TCP", port, port),),
    )
    entries = admintier.ingress_entries(rule, LOCAL, peers)
    assert len(entries) == 1 and entries[0].addrs is not None  # factored
    rs = ruleset.PodRuleset("app", "local", ingress=ruleset.DirectionRuleset(admin=entries))
    return render_nft.render(rs, ("eth0",))


def _element_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if " element " in line]


def test_a_port_edit_patches_the_ports_set_only() -> None:
    peers = _peers(300)
    before, after = _rendered(22, peers), _rendered(23, peers)
    script = incremental.patch(before, after)
    assert script is not None  # same skeleton: a patch, not a table replace
    assert _element_lines(script) == [
        f"delete element inet {render_nft.TABLE} ingress_admin0_p {{ tcp . 22 }}",
        f"add element inet {render_nft.TABLE} ingress_admin0_p {{ tcp . 23 }}",
    ]


def test_a_new_peer_adds_one_address() -> None:
    peers = _peers(300)
    extra = _peers(301)[-1]
    script = incremental.patch(_rendered(22, peers), _rendered(22, [*peers, extra]))
    assert script is not None
    address = extra.pod.ips[0] if extra.pod is not None else ""
    assert _element_lines(script) == [
        f"add element inet {render_nft.TABLE} ingress_admin0_a4 {{ {address} . ipv4 }}"
    ]


def test_a_named_port_keeps_the_concatenated_set() -> None:
    """Named ports resolve per pod: no product, one `addr . proto . port` set as before."""
    local = dataclasses.replace(LOCAL, container_ports=(model.ContainerPort(8080, "TCP", "http"),))
    rule = tiers.Rule(
        "named",
        tiers.DENY,
        (tiers.Peer(namespaces=model.LabelSelector()),),
        (tiers.Port("", named="http"),),
    )
    entries = admintier.ingress_entries(rule, local, _peers(3))
    assert len(entries) == 1 and entries[0].addrs is None
    rs = ruleset.PodRuleset("app", "local", ingress=ruleset.DirectionRuleset(admin=entries))
    script = render_nft.render(rs, ("eth0",)).script
    assert "ingress_admin0_ports4" in script and "ingress_admin0_p " not in script
    assert "10.1.0.2 . tcp . 8080" in script
