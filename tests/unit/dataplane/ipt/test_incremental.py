"""The iptables backend's patch generation (pure): element deltas between two rendered
rulesets as one `ipset restore` batch guarded by the fingerprint set, or None."""

from __future__ import annotations

from agent.calc import ruleset
from agent.dataplane import backends, netns, protocol
from agent.dataplane.ipt import incremental
from agent.dataplane.ipt import render as render_ipt
from agent.sync import pod as sync_pod

IPT = backends.Iptables()
BASE = 0xC6120000  # 198.18.0.0


def addr(n: int) -> ruleset.AddrRange:
    return ruleset.AddrRange(4, BASE + n, BASE + n)


def rs(*peers: int, long_range: bool = False) -> ruleset.PodRuleset:
    ports = [ruleset.PeerPort(addr(p), 6, ruleset.PortRange(80, 80)) for p in peers]
    if long_range:
        ports.append(ruleset.PeerPort(addr(7), 6, ruleset.PortRange(1000, 2000)))
    return ruleset.PodRuleset(
        "prod",
        "web",
        ingress=ruleset.DirectionRuleset(
            isolated=True,
            any_port_peers=(addr(200),),
            port_peers=tuple(sorted(ports, key=lambda p: p.addrs.first)),
            policies=("prod/web",),
        ),
    )


def program(r: ruleset.PodRuleset) -> backends.Program:
    return IPT.render(r, ["eth0"])


def payload(p: backends.Program) -> protocol.IptProgram:
    assert isinstance(p.payload, protocol.IptProgram)
    return p.payload


def test_render_carries_the_fingerprint_in_a_set_referenced_from_a_chain_nothing_jumps_to() -> None:
    p = program(rs(10, 11))
    ipt = payload(p)
    element = render_ipt.state_element(p.fingerprint)
    assert f"add {render_ipt.STATE_SET} {element}\n" in ipt.ipset
    assert f"create {render_ipt.STATE_SET} hash:ip family inet6 " in ipt.ipset
    assert f"-A {render_ipt.STATE} -m set --match-set {render_ipt.STATE_SET} src" in ipt.v6
    assert f"-j {render_ipt.STATE}" not in ipt.v4 + ipt.v6
    assert render_ipt.parse_state(ipt.ipset) == p.fingerprint
    # A ruleset without sets has no fingerprint set (nothing to patch).
    bare = payload(program(ruleset.PodRuleset("prod", "web")))
    assert bare.ipset == "" and render_ipt.STATE not in bare.v6.replace(f":{render_ipt.STATE}", "")


def test_a_flip_becomes_guarded_element_deltas() -> None:
    old, new = program(rs(10, 11, 12)), program(rs(10, 12, 13))
    script = IPT.patch_script(old, new)
    assert script is not None
    lines = script.splitlines()
    fp_set = render_ipt.STATE_SET
    # First the compare-and-swap guard (strict del), last the new fingerprint.
    assert lines[0] == f"del {fp_set} {render_ipt.state_element(old.fingerprint)}"
    assert lines[-1] == f"add {fp_set} {render_ipt.state_element(new.fingerprint)}"
    assert lines[1:-1] == [
        "del -exist PODSEG-@GEN@-i4p 198.18.0.11/32,tcp:80",
        "add -exist PODSEG-@GEN@-i4p 198.18.0.13/32,tcp:80",
    ]
    deletes = [i for i, line in enumerate(lines) if line.startswith("del -exist")]
    adds = [i for i, line in enumerate(lines) if line.startswith("add -exist")]
    assert max(deletes) < min(adds)
    assert incremental.changed(script) == (len(deletes), len(adds))
    assert IPT.patch_script(old, old) == ""


def test_counts_are_the_new_rulesets_elements_per_set() -> None:
    counts = incremental.counts(payload(program(rs(10, 12, 13))))
    assert counts["PODSEG-@GEN@-i4p"] == 3
    assert counts["PODSEG-@GEN@-i4a"] == 1
    assert counts[render_ipt.STATE_SET] == 1


def test_growth_past_the_initial_hash_size_still_patches() -> None:
    """Sizes in the create lines follow the element count; a set grows within its maxelem."""
    small, large = program(rs(*range(10, 1000))), program(rs(*range(10, 1100)))
    assert "hashsize 1024" in payload(small).ipset and "hashsize 2048" in payload(large).ipset
    script = IPT.patch_script(small, large)
    assert script is not None and incremental.changed(script)[1] >= 100


def test_a_new_set_or_a_rule_change_needs_a_whole_apply() -> None:
    assert IPT.patch_script(program(rs(10)), program(rs(10, long_range=True))) is None
    no_sets = program(ruleset.PodRuleset("prod", "web"))
    assert IPT.patch_script(no_sets, no_sets) is None
    egress = ruleset.PodRuleset(
        "prod", "web", ingress=rs(10).ingress, egress=ruleset.DirectionRuleset(isolated=True)
    )
    assert IPT.patch_script(program(rs(10)), program(egress)) is None


def test_patch_request_needs_the_token_and_digest_of_our_own_last_commit() -> None:
    target = netns.Target("/run/netns/x", 7, ("eth0",))
    old, new = program(rs(10)), program(rs(11))
    slot = sync_pod.Slot(target, fingerprint=old.fingerprint, rendered=old)
    assert sync_pod.patch_request(slot, new, IPT) is None  # no token: whole apply
    slot.token, slot.digest = "abc123", "d" * 32
    request = sync_pod.patch_request(slot, new, IPT)
    assert isinstance(request, protocol.IptPatch)
    assert (request.token, request.digest) == ("abc123", "d" * 32)
    assert request.counts == incremental.counts(payload(new))
    slot.adopted = True  # vouched for by fingerprint alone: never patched
    assert sync_pod.patch_request(slot, new, IPT) is None
    # The wire form round-trips (the worker decodes it).
    assert protocol.decode_request(protocol.encode_request(request)) == request
