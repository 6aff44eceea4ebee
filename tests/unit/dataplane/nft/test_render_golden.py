"""The nft text `render_nft.render` produces is frozen: byte for byte, for every ruleset.

Why: the script's text feeds the fingerprint (adoption after a restart, drift checks, skipping
an apply) and is what the kernel is given, so a refactor of the renderer must not change it by
a byte. Two checks: the full script of a few representative rulesets against golden files in
`golden_render/` (a failure shows the diff), and one digest over the scripts of many random
rulesets (tests/support/rulesets.py: built directly, so that only the renderer can move it).

A deliberate change of the text is a format change (bump `FORMAT_VERSION`); then regenerate:
  .venv/bin/python -m tests.unit.dataplane.nft.test_render_golden
and put the printed digest in `RANDOM_DIGEST`.
"""

from __future__ import annotations

import hashlib
import pathlib
import random

import pytest

from agent.calc import ruleset
from agent.dataplane.nft import render as render_nft
from tests.support import rulesets

A = ruleset.AddrRange
P = ruleset.PortRange
PP = ruleset.PeerPort
GOLDEN = pathlib.Path(__file__).parent / "golden_render"
RANDOM_CASES = 300
RANDOM_DIGEST = "761a46a205a6770de6ebe3b5a504f47c37872d38e0bc77f7b8c0b1ac906cb9f2"


def _v4(text: str) -> int:
    a, b, c, d = (int(x) for x in text.split("."))
    return a << 24 | b << 16 | c << 8 | d


def _cidr4(text: str) -> ruleset.AddrRange:
    addr, length = text.split("/")
    first = _v4(addr)
    return A(4, first, first + (1 << (32 - int(length))) - 1)


def _one4(text: str) -> ruleset.AddrRange:
    return A(4, _v4(text), _v4(text))


V6 = 0xFD00_0198_0018_0000 << 64  # fd00:198:18::
LINK_LOCAL = 0xFE80 << 112  # fe80::
NET6 = V6 | 3 << 64  # fd00:198:18:3::
SAMPLE = ruleset.PodRuleset(
    namespace="prod",
    pod="web",
    ingress=ruleset.DirectionRuleset(
        isolated=True,
        any_port_peers=(_cidr4("198.18.3.0/24"), A(6, NET6, NET6 + (1 << 64) - 1)),
        port_peers=(
            PP(A(4, _v4("198.18.0.1"), _v4("198.18.0.5")), 6, P(80, 81)),
            PP(A(6, V6 | 9, V6 | 9), 132, P(3868, 3868)),
        ),
        policies=("prod/a",),
    ),
    egress=ruleset.DirectionRuleset(
        isolated=True, port_peers=(PP(_one4("198.18.0.53"), 17, P(53, 53)),), policies=("prod/b",)
    ),
)
CONTAINED = ruleset.PodRuleset(
    namespace="kube-system",
    pod="coredns-7d8f",
    ingress=SAMPLE.ingress,
    egress=ruleset.DirectionRuleset(
        isolated=True,
        any_port_peers=(_cidr4("198.18.64.0/18"),),
        port_peers=tuple(PP(_one4(f"198.18.1.{i}"), 6, P(443, 443)) for i in range(1, 6)),
        policies=("kube-system/dns", "kube-system/egress"),
    ),
    mode=ruleset.PolicyMode.VISIBILITY,
    quarantine=ruleset.Quarantine(allow_from=(_one4("198.18.200.1"), A(6, V6 | 1, V6 | 1))),
    node_guard=ruleset.NodeGuard(
        node_addrs=(_one4("198.18.0.1"), _one4("198.18.128.1"), A(6, V6 | 2, V6 | 2)),
        ports=(ruleset.ProtoPorts(6, P(22, 22)), ruleset.ProtoPorts(17, P(30000, 32767))),
        blocked=(_one4("169.254.169.254"),),
        scoped=(("eth0", A(6, LINK_LOCAL | 1, LINK_LOCAL | 1)),),
    ),
    anti_spoof=ruleset.AntiSpoof(
        own=(_one4("198.18.1.7"), A(6, V6 | 0x107, V6 | 0x107)),
        link_local=(A(6, LINK_LOCAL | 0x7, LINK_LOCAL | 0x7),),
    ),
    link=ruleset.Link(
        link_local=(A(6, LINK_LOCAL | 0x7, LINK_LOCAL | 0x7),),
        gateways=(_one4("198.18.0.1"), A(6, V6 | 1, V6 | 1)),
        scoped_gateways=(("eth0", A(6, LINK_LOCAL | 1, LINK_LOCAL | 1)),),
        onlink=(_one4("198.18.0.1"), A(6, V6 | 1, V6 | 1)),
    ),
)
CASES: dict[str, tuple[ruleset.PodRuleset, tuple[str, ...]]] = {
    "nothing-isolated": (ruleset.PodRuleset("prod", "idle"), ("eth0",)),
    "both-directions": (SAMPLE, ("eth0",)),
    "ingress-only-no-interfaces": (ruleset.PodRuleset("prod", "in", ingress=SAMPLE.ingress), ()),
    "egress-only-no-interfaces": (ruleset.PodRuleset("prod", "out", egress=SAMPLE.egress), ()),
    "quarantine-only": (
        ruleset.PodRuleset("prod", "q", quarantine=ruleset.Quarantine()),
        ("eth0", "net1"),
    ),
    "contained-visibility-three-interfaces": (CONTAINED, ("net1", "eth0", "eth.0")),
    "anti-spoofing-only": (
        ruleset.PodRuleset("prod", "plain", anti_spoof=CONTAINED.anti_spoof, link=CONTAINED.link),
        ("eth0",),
    ),
}


def random_digest() -> str:
    """sha256 of the script of `RANDOM_CASES` random rulesets (a fixed seed)."""
    rnd = random.Random(2024)
    digest = hashlib.sha256()
    for _ in range(RANDOM_CASES):
        rs, ifaces = rulesets.random_case(rnd)
        digest.update(render_nft.render(rs, ifaces).script.encode())
        digest.update(b"\0")
    return digest.hexdigest()


@pytest.mark.parametrize("name", sorted(CASES))
def test_script_equals_the_golden_file(name: str) -> None:
    rs, ifaces = CASES[name]
    golden = (GOLDEN / f"{name}.nft").read_text()
    assert render_nft.render(rs, ifaces).script == golden


def test_scripts_of_random_rulesets_are_unchanged() -> None:
    assert random_digest() == RANDOM_DIGEST


def main() -> None:
    """Rewrite the golden files from the current renderer and print the random digest."""
    GOLDEN.mkdir(exist_ok=True)
    for name, (rs, ifaces) in CASES.items():
        (GOLDEN / f"{name}.nft").write_text(render_nft.render(rs, ifaces).script)
    print(random_digest())


if __name__ == "__main__":
    main()
