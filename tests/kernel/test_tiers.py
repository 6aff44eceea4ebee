"""The admin tiers in a real namespace: Admin Deny beats a NetworkPolicy allow, Admin Accept
beats a NetworkPolicy deny, Pass hands over to NetworkPolicy, Baseline decides only for a
direction no NetworkPolicy isolates; denied egress is silent (the sender sees no error). Both
backends, committed through the real dataplane worker.

Root only; namespaces `psg-<random6>-render`/`-rpeer`, deleted by the fixtures."""

from __future__ import annotations

import pytest

from agent.calc import ruleset
from tests.support.kernel import UDP, P, commit, run, udp_exchange

BACKENDS = pytest.mark.parametrize("backend", ["nftables", "iptables"])

POD, PEER = "198.18.0.10", "198.18.0.20"
PEER_RANGE = ruleset.AddrRange(4, 0xC6120014, 0xC6120014)  # 198.18.0.20
POD_RANGE = ruleset.AddrRange(4, 0xC612000A, 0xC612000A)  # 198.18.0.10


def entry(
    action: ruleset.TierAction, port: int, addrs: ruleset.AddrRange = PEER_RANGE
) -> ruleset.TierEntry:
    return ruleset.TierEntry(
        "ClusterNetworkPolicy/test",
        f"{action.value}-{port}",
        action,
        (ruleset.PeerPort(addrs, UDP, P(port, port)),),
    )


def counters(ns: str, backend: str) -> str:
    if backend == "nftables":
        return run("ip", "netns", "exec", ns, "nft", "list", "counters", "table", "inet", "podseg")
    return run("ip", "netns", "exec", ns, "iptables-save", "-c", "-t", "filter")


def delivered(sender: str, receiver: str, dst: str, port: int) -> bool:
    sent, received = udp_exchange(sender, receiver, dst, port, 40000 + port % 1000)
    assert sent == "sent", f"the sender must not see the drop: {sent}"
    return received.startswith("got")


@BACKENDS
def test_admin_tier_around_networkpolicy(pod_and_peer: tuple[str, str], backend: str) -> None:
    pod, peer = pod_and_peer
    rs = ruleset.PodRuleset(
        "prod",
        "web",
        ingress=ruleset.DirectionRuleset(
            isolated=True,
            port_peers=(ruleset.PeerPort(PEER_RANGE, UDP, P(5001, 5002)),),
            policies=("prod/team",),
            admin=(
                entry(ruleset.TierAction.DENY, 5001),
                entry(ruleset.TierAction.PASS, 5002),
                entry(ruleset.TierAction.ACCEPT, 5003),
            ),
            # Never reached: the direction is isolated by a NetworkPolicy.
            baseline=(entry(ruleset.TierAction.ACCEPT, 5004),),
        ),
    )
    commit(pod, rs, backend)
    verdicts = {port: delivered(peer, pod, POD, port) for port in (5001, 5002, 5003, 5004)}
    assert verdicts == {5001: False, 5002: True, 5003: True, 5004: False}
    assert "deny.ingress.admin.enforce" in counters(pod, backend)


@BACKENDS
def test_baseline_decides_where_no_networkpolicy_isolates(
    pod_and_peer: tuple[str, str], backend: str
) -> None:
    pod, peer = pod_and_peer
    rs = ruleset.PodRuleset(
        "prod",
        "web",
        ingress=ruleset.DirectionRuleset(
            baseline=(entry(ruleset.TierAction.DENY, 5005), entry(ruleset.TierAction.ACCEPT, 5006)),
        ),
        egress=ruleset.DirectionRuleset(admin=(entry(ruleset.TierAction.DENY, 5007),)),
    )
    commit(pod, rs, backend)
    assert not delivered(peer, pod, POD, 5005)
    assert delivered(peer, pod, POD, 5006)
    assert delivered(peer, pod, POD, 5008)  # no tier matches: the Kubernetes default, allow
    # Egress Deny: decided in output, dropped in the device hook, silently.
    assert not delivered(pod, peer, PEER, 5007)
    assert delivered(pod, peer, PEER, 5009)


@BACKENDS
def test_visibility_mode_lets_an_admin_deny_through(
    pod_and_peer: tuple[str, str], backend: str
) -> None:
    pod, peer = pod_and_peer
    rs = ruleset.PodRuleset(
        "prod",
        "web",
        ingress=ruleset.DirectionRuleset(admin=(entry(ruleset.TierAction.DENY, 5010),)),
        mode=ruleset.PolicyMode.VISIBILITY,
    )
    commit(pod, rs, backend)
    assert delivered(peer, pod, POD, 5010)
    assert "deny.ingress.admin.visibility" in counters(pod, backend)
