"""The nft script shape, element formatting and fingerprint of `render_nft`."""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import re

import pytest

from agent.calc import intervals, ruleset
from agent.dataplane.nft import render as render_nft
from tests.support import peerchanges, rulesets

A = ruleset.AddrRange
P = ruleset.PortRange
TCP, UDP, SCTP = 6, 17, 132


def ip(text: str) -> ruleset.AddrRange:
    return intervals.address_range(text)


def isolated(**kw: object) -> ruleset.DirectionRuleset:
    return ruleset.DirectionRuleset(isolated=True, **kw)  # type: ignore[arg-type]


SAMPLE = ruleset.PodRuleset(
    namespace="prod",
    pod="web",
    ingress=isolated(
        any_port_peers=(
            intervals.cidr_range("198.18.3.0/24"),
            intervals.cidr_range("fd00:198:18:3::/64"),
        ),
        port_peers=(
            ruleset.PeerPort(A(4, ip("198.18.0.1").first, ip("198.18.0.5").first), TCP, P(80, 81)),
            ruleset.PeerPort(ip("fd00:198:18::9"), SCTP, P(3868, 3868)),
        ),
        policies=("prod/a",),
    ),
    egress=isolated(
        port_peers=(ruleset.PeerPort(ip("198.18.0.53"), UDP, P(53, 53)),), policies=("prod/b",)
    ),
)


def test_script_replaces_both_tables_atomically_first() -> None:
    script = render_nft.render(SAMPLE, ["eth0"]).script
    assert script.startswith(
        "table inet podseg\ndelete table inet podseg\n"
        "table netdev podseg\ndelete table netdev podseg\n"
    )
    assert script.count("table inet podseg {") == 1
    assert script.count("table netdev podseg {") == 1


def test_sets_and_rules_per_family_and_direction() -> None:
    script = render_nft.render(SAMPLE, ["eth0"]).script
    assert "set ingress_any4 {\n    type ipv4_addr\n    flags interval\n" in script
    assert "198.18.3.0/24" in script and "fd00:198:18:3::/64" in script
    sets = dict(render_nft.render(SAMPLE, ["eth0"]).sets)
    # one address and one port: a hash set of `addr . proto . port`
    assert "fd00:198:18::9 . sctp . 3868" in script
    assert "198.18.0.53 . udp . 53" in script
    assert "type ipv6_addr . inet_proto . inet_service" in script
    # a range (of addresses or ports): an address interval set per port spec, no pipapo
    assert sets["inet ingress_tcp_80_81_v4"] == ("198.18.0.1-198.18.0.5",)
    assert "  set ingress_tcp_80_81_v4 {\n    type ipv4_addr\n    flags interval\n" in script
    assert " . tcp . 80-81" not in script
    assert "ip saddr @ingress_any4 goto ingress_allow" in script
    assert "ip6 saddr @ingress_any6 goto ingress_allow" in script
    assert "ip saddr . meta l4proto . th dport @ingress_exact4 goto ingress_allow" in script
    assert "ip6 saddr . meta l4proto . th dport @ingress_exact6 goto ingress_allow" in script
    assert "ip daddr . meta l4proto . th dport @egress_exact4 goto egress_allow" in script
    assert "meta l4proto . th dport vmap { tcp . 80-81 : jump ingress_by_tcp_80_81, " in script
    assert "ip saddr @ingress_tcp_80_81_v4 goto ingress_allow" in script
    assert "ip daddr @egress_udp_53_v4 goto egress_allow" in script
    # empty sets are declared (without elements), so that a peer change keeps the skeleton
    assert "  set egress_any4 {\n    type ipv4_addr\n    flags interval\n  }\n" in script
    assert sets["inet egress_exact6"] == () and sets["inet egress_udp_53_v6"] == ()


def test_overlapping_port_specs_get_disjoint_map_keys() -> None:
    """Two address runs allowed 80-90 and 85-95: the map's keys are the ports on which the
    covering specs are constant, each jumping to a chain that checks exactly those specs."""
    run = [ip("198.18.0.1"), ip("198.18.0.9")]
    d = isolated(
        port_peers=(
            ruleset.PeerPort(run[0], TCP, P(80, 90)),
            ruleset.PeerPort(run[1], TCP, P(85, 95)),
        ),
        policies=("prod/a",),
    )
    script = render_nft.render(ruleset.PodRuleset("prod", "web", ingress=d), ["eth0"]).script
    assert (
        "meta l4proto . th dport vmap { tcp . 80-84 : jump ingress_by_tcp_80_84, "
        "tcp . 85-90 : jump ingress_by_tcp_85_90, tcp . 91-95 : jump ingress_by_tcp_91_95 }"
    ) in script
    both = script.split("chain ingress_by_tcp_85_90 {\n")[1].split("\n  }\n")[0]
    assert "@ingress_tcp_80_90_v4" in both and "@ingress_tcp_85_95_v4" in both
    low = script.split("chain ingress_by_tcp_80_84 {\n")[1].split("\n  }\n")[0]
    assert "@ingress_tcp_80_90_v4" in low and "85_95" not in low


def test_chain_layout_and_deny_paths() -> None:
    script = render_nft.render(SAMPLE, ["eth0"]).script
    chains = re.findall(r"chain (\S+) \{", script)
    assert chains == [
        "ingress_allow",
        "ingress_by_tcp_80_81",
        "ingress_by_sctp_3868",
        "egress_allow",
        "egress_by_udp_53",
        "nd_ingress",
        "nd_egress",
        "input",
        "ingress_policy",
        "ingress_deny",
        "output",
        "egress_policy",
        "egress_deny",
        "state",
        "egress_eth0",
    ]
    assert "type filter hook input priority filter; policy accept;" in script
    assert "type filter hook output priority filter; policy accept;" in script
    assert 'iif "lo" accept' in script and 'oif "lo" accept' in script
    assert "ct state established,related" in script
    ingress_counter = 'counter name "deny.ingress.policy.enforce"'
    egress_counter = 'counter name "deny.egress.policy.enforce"'
    assert re.search(
        r"chain ingress_deny \{\n    limit rate .* log .*\n    " + ingress_counter + " drop\n",
        script,
    )
    mark = "0x00100000"
    assert render_nft.DENY_MARK == 0x00100000
    assert (
        f"{egress_counter} meta mark set meta mark | {mark} ct mark set ct mark | {mark} accept"
        in script
    )
    assert f'oifname != {{ "eth0" }} {egress_counter} drop' in script
    assert 'type filter hook egress device "eth0" priority filter; policy accept;' in script
    assert f"meta mark & {mark} == {mark} counter drop" in script
    # every accept of a policy goes through one chain that samples new connections
    allow = script.split("chain egress_allow {\n")[1].split("\n  }\n")[0].splitlines()
    assert [line.strip() for line in allow] == [
        "ct mark set ct mark & 0xffefffff",
        "ct state new limit rate 20/second burst 20 packets "
        'log prefix "podseg accept egress" group 2100 snaplen 128 queue-threshold 16',
        "accept",
    ]
    # in output, only packets leaving through an unhooked interface are dropped
    egress_deny = script.split("chain egress_deny {\n")[1].split("\n  }\n")[0].splitlines()
    assert [line.strip() for line in egress_deny if "drop" in line] == [
        f'oifname != {{ "eth0" }} {egress_counter} drop'
    ]
    ingress_deny = script.split("chain ingress_deny {\n")[1].split("\n  }\n")[0]
    assert "mark" not in ingress_deny


def test_not_isolated_direction_gets_no_chain_and_no_netdev_table() -> None:
    rs = ruleset.PodRuleset("prod", "web", ingress=SAMPLE.ingress)
    script = render_nft.render(rs, ["eth0"]).script
    assert "hook input" in script and "hook output" not in script
    assert "table netdev podseg {" not in script
    assert "egress_" not in script.replace("delete table netdev", "")
    nothing = render_nft.render(ruleset.PodRuleset("prod", "web"), ["eth0"]).script
    assert "chain state {" in nothing and 'comment "podseg fp=' in nothing
    assert "hook" not in nothing


def test_egress_without_interfaces_drops_in_output() -> None:
    rs = ruleset.PodRuleset("prod", "web", egress=isolated())
    script = render_nft.render(rs, []).script
    assert "table netdev podseg {" not in script
    assert re.search(
        r"chain egress_deny \{\n    limit rate .*\n"
        r'    counter name "deny.egress.policy.enforce" drop\n  \}',
        script,
    )
    assert "meta mark set" not in script


def test_several_interfaces_get_one_chain_each() -> None:
    rs = ruleset.PodRuleset("prod", "web", egress=isolated())
    script = render_nft.render(rs, ["net1", "eth0", "net1", "eth.0"]).script
    assert 'oifname != { "eth.0", "eth0", "net1" }' in script
    netdev = script.split("table netdev podseg {")[1]
    assert re.findall(r"chain (egress_\S+) \{", netdev) == [
        "egress_eth_0",
        "egress_eth0",
        "egress_net1",
    ]
    assert render_nft.interface_chains(["a.b", "a-b", "a_b"]) == [
        ("egress_a_b", "a.b"),
        ("egress_a_b_2", "a-b"),
        ("egress_a_b_3", "a_b"),
    ]


@pytest.mark.parametrize("bad", ["", "x" * 16, 'ev"il', "a b", "a/b", ".", "a:b"])
def test_invalid_interface_names_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        render_nft.render(SAMPLE, [bad])


def test_format_addr_prefix_single_and_range() -> None:
    assert render_nft.format_addr(ip("198.18.0.1")) == "198.18.0.1"
    assert render_nft.format_addr(intervals.cidr_range("198.18.0.0/15")) == "198.18.0.0/15"
    assert render_nft.format_addr(intervals.ALL_V4) == "0.0.0.0/0"
    assert render_nft.format_addr(intervals.ALL_V6) == "::/0"
    assert render_nft.format_addr(A(4, ip("198.18.0.1").first, ip("198.18.0.2").first)) == (
        "198.18.0.1-198.18.0.2"
    )
    assert render_nft.format_addr(A(4, ip("198.18.0.0").first, ip("198.18.0.2").first)) == (
        "198.18.0.0-198.18.0.2"
    )
    assert render_nft.format_addr(ip("::1")) == "::1"  # low v6 values stay v6
    assert render_nft.format_addr(intervals.cidr_range("fd00:198:18::/48")) == "fd00:198:18::/48"
    assert render_nft.format_ports(P(80, 80)) == "80" and render_nft.format_ports(P(1, 2)) == "1-2"
    assert [render_nft.format_protocol(n) for n in (6, 17, 132, 99)] == ["tcp", "udp", "sctp", "99"]


@pytest.mark.parametrize("seed", range(3))
def test_format_addr_spells_what_ipaddress_spells(seed: int) -> None:
    """Random singles, prefixes and ranges of both families, the ends of each space too."""
    rng = random.Random(seed)

    def spelled(r: ruleset.AddrRange) -> str:
        addr = ipaddress.IPv4Address if r.family == 4 else ipaddress.IPv6Address
        size, bits = r.last - r.first + 1, 32 if r.family == 4 else 128
        if size == 1:
            return str(addr(r.first))
        if size & (size - 1) == 0 and r.first % size == 0:
            return f"{addr(r.first)}/{bits - (size.bit_length() - 1)}"
        return f"{addr(r.first)}-{addr(r.last)}"

    for _ in range(3000):
        family = rng.choice((4, 6))
        top = (1 << (32 if family == 4 else 128)) - 1
        first = rng.choice((0, top, rng.randrange(top + 1)))
        shape = rng.randrange(3)
        if shape == 1:  # a prefix
            n = rng.randrange(1, 24)
            first = first >> n << n
            last = first + (1 << n) - 1
        else:
            last = first if shape == 0 else min(first + rng.randrange(1, 5000), top)
        r = ruleset.AddrRange(family, first, last)
        assert render_nft.format_addr(r) == spelled(r)


def test_pods_sharing_peer_tuples_render_as_each_alone() -> None:
    """The peer sets' texts are kept per peer tuple (pods with the same peers share them):
    a ruleset renders the same after any other as with nothing kept, also when its tuples
    are the very objects of another ruleset's, in another direction or policy, or equal but
    distinct objects, and when the kept entries are evicted in between."""
    rng = random.Random(7)
    rulesets_ = []
    for n in range(40):
        union = peerchanges.pieces(rng, rng.randrange(1, 30))
        rs = peerchanges.peer_ruleset(rng, union, rng.randrange(len(union) + 1))
        if n % 3 == 0 and rulesets_:  # the same tuples in another place and pod
            other = rng.choice(rulesets_)
            rs = dataclasses.replace(rs, pod=f"p{n}", egress=other.ingress)
        rulesets_.append(rs)
    alone = []
    for rs in rulesets_:
        render_nft.clear_caches()
        alone.append(render_nft.render(rs, ["eth0"]).script)
    for _ in range(3):
        for i in rng.sample(range(len(rulesets_)), len(rulesets_)):
            assert render_nft.render(rulesets_[i], ["eth0"]).script == alone[i]


def test_fingerprint_stable_and_parsed_back() -> None:
    one = render_nft.render(SAMPLE, ["eth0"])
    two = render_nft.render(SAMPLE, ["eth0"])
    assert one == two
    assert re.fullmatch(r"[0-9a-f]{16}", one.fingerprint)
    assert re.fullmatch(r"[0-9a-f]{16}", one.shape) and one.shape != one.fingerprint
    # the table comment carries the shape; the state rule carries the whole fingerprint
    assert f'comment "podseg fp={one.shape} pod=prod/web"' in one.script
    assert f'return comment "podseg state={one.fingerprint}"' in one.script
    listing = (
        f'table inet podseg {{\n\tcomment "podseg fp={one.shape} pod=prod/web"\n'
        f'\tchain state {{\n\t\treturn comment "podseg state={one.fingerprint}"\n\t}}\n}}\n'
    )
    assert render_nft.parse_fingerprint(listing) == one.fingerprint
    # a table with only an owner comment (an older format, or an impostor) is not current
    only_comment = f'table inet podseg {{\n\tcomment "podseg fp={one.fingerprint} pod=x/y"\n}}\n'
    assert render_nft.parse_fingerprint(only_comment) is None
    assert render_nft.parse_fingerprint("table inet podseg {\n}\n") is None
    assert render_nft.parse_fingerprint('comment "other fp=0123456789abcdef"') is None
    # interface order and duplicates do not matter
    assert render_nft.render(SAMPLE, ["eth0", "net1"]) == render_nft.render(
        SAMPLE, ["net1", "eth0", "eth0"]
    )


@pytest.mark.parametrize(
    "changed",
    [
        ruleset.PodRuleset("prod", "web2", SAMPLE.ingress, SAMPLE.egress),
        ruleset.PodRuleset(
            "prod",
            "web",
            dataclasses.replace(SAMPLE.ingress, policies=("prod/a", "prod/z")),
            SAMPLE.egress,
        ),
        ruleset.PodRuleset("prod", "web", SAMPLE.ingress, ruleset.DirectionRuleset()),
        ruleset.PodRuleset(
            "prod",
            "web",
            SAMPLE.ingress,
            isolated(
                port_peers=(ruleset.PeerPort(ip("198.18.0.53"), UDP, P(53, 54)),),
                policies=("prod/b",),
            ),
        ),
        ruleset.PodRuleset(
            "prod",
            "web",
            SAMPLE.ingress,
            isolated(port_peers=SAMPLE.egress.port_peers, policies=("prod/c",)),
        ),
    ],
)
def test_fingerprint_changes_with_content(changed: ruleset.PodRuleset) -> None:
    assert (
        render_nft.render(changed, ["eth0"]).fingerprint
        != render_nft.render(SAMPLE, ["eth0"]).fingerprint
    )


def test_fingerprint_changes_with_interfaces() -> None:
    base = render_nft.render(SAMPLE, ["eth0"]).fingerprint
    assert render_nft.render(SAMPLE, ["eth0", "net1"]).fingerprint != base
    assert render_nft.render(SAMPLE, []).fingerprint != base


def test_long_names_keep_comment_within_kernel_limit() -> None:
    rs = ruleset.PodRuleset("n" * 63, "p" * 253, SAMPLE.ingress)
    out = render_nft.render(rs, ["eth0"])
    comment = re.search(r'comment "([^"]*)"', out.script)
    assert comment is not None and len(comment.group(1).encode()) <= 127
    assert render_nft.parse_fingerprint(out.script) == out.fingerprint


def test_rule_count_is_constant_in_the_number_of_peers() -> None:
    def rules(n: int) -> int:
        peers = tuple(ruleset.PeerPort(A(4, i * 2, i * 2), TCP, P(80, 80)) for i in range(n))
        any_port = tuple(A(6, i * 2, i * 2) for i in range(n))
        rs = ruleset.PodRuleset(
            "a",
            "b",
            isolated(port_peers=peers, any_port_peers=any_port),
            isolated(port_peers=peers),
        )
        script = render_nft.render(rs, ["eth0"]).script
        return sum(1 for line in script.splitlines() if " accept" in line or " drop" in line)

    assert rules(3) == rules(3000)


def test_delete_script() -> None:
    assert render_nft.delete_script() == (
        "table inet podseg\ndelete table inet podseg\n"
        "table netdev podseg\ndelete table netdev podseg\n"
    )
    assert render_nft.TABLE == "podseg"


def _read(script: str) -> tuple[str, dict[str, tuple[str, ...]]]:
    """The skeleton and the sets of a script, read from its text alone: the skeleton is the
    tables' text without the delete prelude, the owner comment, the state chain and the
    elements of any set; the sets are `"<family> <set>"` -> elements."""
    lines = script.splitlines(keepends=True)
    assert "".join(lines[:4]) == render_nft.delete_script()
    skeleton: list[str] = []
    sets: dict[str, tuple[str, ...]] = {}
    family = current = ""
    block: list[str] | None = None  # the element lines of `current`, or of the state chain
    for line in lines[4:]:
        if block is not None:
            if line in ("    }\n", "  }\n"):
                if current:
                    sets[current] = tuple(e.strip().rstrip(",") for e in block)
                block = None
            else:
                block.append(line)
            continue
        if table := re.fullmatch(r"table (\S+) podseg \{\n", line):
            family = table.group(1)
        elif named := re.fullmatch(r"  set (\S+) \{\n", line):
            current = f"{family} {named.group(1)}"
            sets[current] = ()
        elif line == "    elements = {\n":
            block = []
            continue
        elif line == "  chain state {\n":
            current, block = "", []
            continue
        elif line.startswith('  comment "podseg fp='):
            continue
        skeleton.append(line)
    return "".join(skeleton), sets


def test_sets_and_shape_match_the_script_for_any_ruleset() -> None:
    rnd = random.Random(7)
    for _ in range(400):
        rs, ifaces = rulesets.random_case(rnd)
        rendered = render_nft.render(rs, ifaces)
        skeleton, sets = _read(rendered.script)
        assert "elements" not in skeleton and "podseg state=" not in skeleton
        assert rendered.sets == tuple(sorted(sets.items()))
        assert rendered.shape == render_nft.fingerprint_of(rs, ["shape", skeleton])
        assert rendered.script == render_nft.script_text(rendered.tables)


def test_tables_are_the_structure_of_the_script() -> None:
    inet, netdev = render_nft.render(SAMPLE, ["eth0"]).tables
    assert (inet.family, inet.name, netdev.family) == ("inet", "podseg", "netdev")
    assert inet.comment is not None and inet.comment.startswith("podseg fp=")
    assert inet.counters == ("deny.egress.policy.enforce", "deny.ingress.policy.enforce")
    assert inet.sets[0] == render_nft.NamedSet(
        "ingress_any4", "ipv4_addr", ("interval",), ("198.18.3.0/24",)
    )
    assert [c.name for c in inet.chains][-1] == render_nft.STATE_CHAIN
    assert netdev.chains[0].header == (
        'type filter hook egress device "eth0" priority filter; policy accept;',
    )
    assert render_nft.netdev_table(SAMPLE, ["eth0"]) == render_nft.table_text(netdev)
    assert render_nft.netdev_table(ruleset.PodRuleset("prod", "idle"), ["eth0"]) == []
