"""How nftables denies: each deny logs (rate-limited NFLOG), counts under a named counter and
drops, or accepts in visibility mode; log prefixes and counter names parse back."""

from __future__ import annotations

import dataclasses

from agent.calc import ruleset
from agent.dataplane.nft import render as render_nft


def test_deny_rules_log_count_and_drop_per_mode() -> None:
    ingress, egress = ruleset.Direction.INGRESS, ruleset.Direction.EGRESS
    vis = ruleset.PolicyMode.VISIBILITY
    rules = render_nft.deny_rules(ingress, "policy", ["eth0"])
    assert rules[0].startswith(f"limit rate {render_nft.LOG_RATE} log prefix")
    assert f"group {render_nft.NFLOG_GROUP}" in rules[0] and "queue-threshold" in rules[0]
    assert rules[1] == 'counter name "deny.ingress.policy.enforce" drop'
    egress_rules = render_nft.deny_rules(egress, "quarantine", ["eth0"])
    assert '"podseg egress quarantine enforce"' in egress_rules[0]
    assert "meta mark set" in egress_rules[2] and egress_rules[2].endswith("accept")
    for direction in (ingress, egress):
        visible = render_nft.deny_rules(direction, "policy", ["eth0"], mode=vis)
        assert visible[-1] == f'counter name "deny.{direction.value}.policy.visibility" accept'
        assert not any("drop" in r or "mark" in r for r in visible)
    rs = ruleset.PodRuleset("x", "b", ingress=ruleset.DirectionRuleset(isolated=True), mode=vis)
    script = render_nft.render(rs, ["eth0"]).script
    assert "counter deny.ingress.policy.visibility {" in script
    enforce = render_nft.render(dataclasses.replace(rs, mode=ruleset.PolicyMode.ENFORCE), ["eth0"])
    assert enforce.fingerprint != render_nft.render(rs, ["eth0"]).fingerprint


def test_prefix_and_counter_names_round_trip() -> None:
    d, m = ruleset.Direction.EGRESS, ruleset.PolicyMode.VISIBILITY
    for reason in ("policy", "quarantine", "node-guard"):
        assert render_nft.parse_log_prefix(render_nft.log_prefix(d, reason, m)) == (
            "egress",
            reason,
            "visibility",
        )
        assert render_nft.parse_counter_name(render_nft.counter_name(d, reason, m)) == (
            "egress",
            reason,
            "visibility",
        )
    assert render_nft.parse_log_prefix("kernel: something") is None
    assert render_nft.parse_counter_name("mine") is None
