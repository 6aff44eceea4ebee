"""Rendered nft scripts load into a real (throwaway) network namespace and read back.

Root only. Every namespace is named `psg-<random6>-render` and deleted by its fixture, even
when a test fails; the root namespace's firewall is never touched.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from agent.calc import intervals, ruleset
from agent.dataplane.nft import render as render_nft

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="nft binary not installed"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 not installed"),
]

TCP, UDP, SCTP = 6, 17, 132
P = ruleset.PortRange
V4_BASE = int(intervals.address_range("198.18.0.0").first)
V6_BASE = int(intervals.address_range("fd00:198:18::").first)


def _run(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"psg-{secrets.token_hex(3)}-render"
    _run("ip", "netns", "add", name)
    try:
        _run("ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        for dev in ("lo", "eth0", "eth0p"):
            _run("ip", "-n", name, "link", "set", dev, "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def load(ns: str, script: str) -> None:
    _run("ip", "netns", "exec", ns, "nft", "-f", "-", stdin=script)


def fingerprint_in(ns: str) -> str | None:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "list", "table", "inet", "podseg"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return render_nft.parse_fingerprint(done.stdout) if done.returncode == 0 else None


def tables_in(ns: str) -> list[str]:
    return [
        line
        for line in _run("ip", "netns", "exec", ns, "nft", "list", "tables").splitlines()
        if line
    ]


def v4(offset: int) -> ruleset.AddrRange:
    return ruleset.AddrRange(4, V4_BASE + offset, V4_BASE + offset)


def v6(offset: int) -> ruleset.AddrRange:
    return ruleset.AddrRange(6, V6_BASE + offset, V6_BASE + offset)


def apply_and_check(ns: str, rs: ruleset.PodRuleset, interfaces: list[str]) -> render_nft.Rendered:
    rendered = render_nft.render(rs, interfaces)
    load(ns, rendered.script)
    assert fingerprint_in(ns) == rendered.fingerprint
    return rendered


V4_ONLY = ruleset.PodRuleset(
    "prod",
    "web",
    ingress=ruleset.DirectionRuleset(
        isolated=True,
        any_port_peers=(intervals.cidr_range("198.18.3.0/24"),),
        port_peers=(
            ruleset.PeerPort(ruleset.AddrRange(4, V4_BASE + 1, V4_BASE + 5), TCP, P(80, 81)),
            ruleset.PeerPort(v4(9), UDP, P(53, 53)),
            ruleset.PeerPort(v4(9), SCTP, P(3868, 3868)),
        ),
        policies=("prod/a",),
    ),
)

V6_BOTH = ruleset.PodRuleset(
    "prod",
    "web6",
    ingress=ruleset.DirectionRuleset(
        isolated=True,
        any_port_peers=(intervals.cidr_range("fd00:198:18:3::/64"),),
        port_peers=(ruleset.PeerPort(v6(7), TCP, P(443, 443)),),
        policies=("prod/a",),
    ),
    egress=ruleset.DirectionRuleset(
        isolated=True,
        port_peers=(ruleset.PeerPort(v6(8), UDP, P(0, 65535)),),
        policies=("prod/b",),
    ),
)

DUAL_BOTH = ruleset.PodRuleset(
    "prod",
    "web",
    ingress=ruleset.DirectionRuleset(
        isolated=True, any_port_peers=intervals.ALL_ADDRESSES, policies=("prod/open",)
    ),
    egress=ruleset.DirectionRuleset(
        isolated=True,
        any_port_peers=(intervals.cidr_range("198.18.0.0/16"),),
        port_peers=(
            ruleset.PeerPort(intervals.ALL_V4, UDP, P(53, 53)),
            ruleset.PeerPort(intervals.ALL_V6, UDP, P(53, 53)),
        ),
        policies=("prod/dns",),
    ),
)

DENY_ALL = ruleset.PodRuleset(
    "prod",
    "web",
    ingress=ruleset.DirectionRuleset(isolated=True, policies=("prod/deny",)),
    egress=ruleset.DirectionRuleset(isolated=True, policies=("prod/deny",)),
)


def test_v4_only_ingress(netns: str) -> None:
    apply_and_check(netns, V4_ONLY, ["eth0"])
    assert tables_in(netns) == ["table inet podseg"]  # no egress isolation: no netdev table
    listing = _run(
        "ip", "netns", "exec", netns, "nft", "list", "set", "inet", "podseg", "ingress_ports4"
    )
    assert "198.18.0.9 . udp . 53" in listing and "198.18.0.9 . sctp . 3868" in listing


def test_v6_and_egress_hook(netns: str) -> None:
    apply_and_check(netns, V6_BOTH, ["eth0"])
    assert sorted(tables_in(netns)) == ["table inet podseg", "table netdev podseg"]
    chain = _run(
        "ip", "netns", "exec", netns, "nft", "list", "chain", "netdev", "podseg", "egress_eth0"
    )
    assert 'hook egress device "eth0"' in chain


def test_isolated_both_ways_dual_stack_and_deny_all(netns: str) -> None:
    apply_and_check(netns, DUAL_BOTH, ["eth0", "eth0p"])
    netdev = _run("ip", "netns", "exec", netns, "nft", "list", "table", "netdev", "podseg")
    assert "egress_eth0 " in netdev and "egress_eth0p " in netdev
    apply_and_check(netns, DENY_ALL, ["eth0"])
    apply_and_check(netns, DENY_ALL, [])  # no interfaces: egress denied in output instead
    assert tables_in(netns) == ["table inet podseg"]


def test_many_elements(netns: str) -> None:
    peers = []
    for i in range(5000):
        peers.append(ruleset.PeerPort(v4(3 * i), TCP, P(80, 80)))
        peers.append(ruleset.PeerPort(v4(3 * i), TCP, P(8000 + i % 7, 8000 + i % 7)))
        peers.append(ruleset.PeerPort(v6(3 * i), TCP, P(80, 81)))
    any_port = tuple(v4(3 * i + 1) for i in range(5000))
    rs = ruleset.PodRuleset(
        "prod",
        "big",
        ingress=ruleset.DirectionRuleset(
            isolated=True,
            any_port_peers=any_port,
            port_peers=tuple(sorted(peers)),
            policies=("prod/big",),
        ),
        egress=ruleset.DirectionRuleset(
            isolated=True, port_peers=tuple(sorted(peers)), policies=("prod/big",)
        ),
    )
    apply_and_check(netns, rs, ["eth0"])
    listing = _run(
        "ip", "netns", "exec", netns, "nft", "list", "set", "inet", "podseg", "egress_ports6"
    )
    assert listing.count(". tcp . 80-81") == 5000


def test_reapply_over_existing_tables_and_switch_to_not_isolated(netns: str) -> None:
    first = apply_and_check(netns, DUAL_BOTH, ["eth0"])
    again = apply_and_check(netns, DUAL_BOTH, ["eth0"])  # same script over itself
    assert again.fingerprint == first.fingerprint
    second = apply_and_check(netns, V4_ONLY, ["eth0"])
    assert second.fingerprint != first.fingerprint
    assert tables_in(netns) == ["table inet podseg"]
    ingress_only = apply_and_check(netns, V6_BOTH, ["eth0"])
    assert "table netdev podseg" in tables_in(netns)
    assert ingress_only.fingerprint != second.fingerprint
    open_pod = apply_and_check(netns, ruleset.PodRuleset("prod", "web"), ["eth0"])
    assert tables_in(netns) == ["table inet podseg"]
    chains = _run("ip", "netns", "exec", netns, "nft", "list", "chains")
    assert "hook" not in chains
    assert fingerprint_in(netns) == open_pod.fingerprint


def test_delete_script_removes_everything_and_is_idempotent(netns: str) -> None:
    apply_and_check(netns, DUAL_BOTH, ["eth0"])
    assert len(tables_in(netns)) == 2
    load(netns, render_nft.delete_script())
    assert tables_in(netns) == []
    assert fingerprint_in(netns) is None
    load(netns, render_nft.delete_script())  # nothing there: still no error
    assert tables_in(netns) == []


def test_failed_script_leaves_previous_ruleset(netns: str) -> None:
    good = apply_and_check(netns, DUAL_BOTH, ["eth0"])
    broken = render_nft.render(V4_ONLY, ["nosuchdev"]).script.replace(
        "table netdev podseg {", "table netdev podseg {\n  chain x { bogus }\n"
    )
    with pytest.raises(AssertionError):
        load(netns, broken + "table inet podseg { chain y { bogus } }\n")
    assert fingerprint_in(netns) == good.fingerprint


RECV = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(float(sys.argv[3]))
print("ready", flush=True)
try:
    data, peer = s.recvfrom(100)
    print("got", data.decode(), peer[1], flush=True)
except TimeoutError:
    print("timeout", flush=True)
"""

SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[3])))
try:
    s.sendto(b"hi", (sys.argv[1], int(sys.argv[2])))
    print("sent", flush=True)
except OSError as exc:
    print("error", exc.errno, flush=True)
"""


@pytest.fixture
def pod_and_peer(netns: str) -> Iterator[tuple[str, str]]:
    """`netns` as the pod (198.18.0.10 on eth0) and a peer namespace (198.18.0.20)."""
    peer = netns.replace("-render", "-rpeer")
    _run("ip", "netns", "add", peer)
    try:
        _run("ip", "-n", netns, "link", "set", "eth0p", "netns", peer)
        _run("ip", "-n", netns, "addr", "add", "198.18.0.10/16", "dev", "eth0")
        _run("ip", "-n", peer, "addr", "add", "198.18.0.20/16", "dev", "eth0p")
        _run("ip", "-n", peer, "link", "set", "eth0p", "up")
        _run("ip", "-n", peer, "link", "set", "lo", "up")
        yield netns, peer
    finally:
        subprocess.run(["ip", "netns", "del", peer], capture_output=True, check=False)


def udp_exchange(
    sender: str, receiver: str, dst: str, dport: int, sport: int, timeout: float = 1.0
) -> tuple[str, str]:
    """Send one datagram; return (sender's outcome, receiver's outcome)."""
    import sys

    recv = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            receiver,
            sys.executable,
            "-c",
            RECV,
            dst,
            str(dport),
            str(timeout),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert recv.stdout is not None and recv.stdout.readline().strip() == "ready"
        sent = _run(
            "ip", "netns", "exec", sender, sys.executable, "-c", SEND, dst, str(dport), str(sport)
        ).strip()
        received = recv.communicate(timeout=timeout + 10)[0].strip()
    finally:
        recv.kill()
        recv.wait()
    return sent, received


def test_denials_are_silent_and_denied_flows_open_no_reply_path(
    pod_and_peer: tuple[str, str],
) -> None:
    pod, peer = pod_and_peer
    peer_ip = v4(20)
    rs = ruleset.PodRuleset(
        "prod",
        "web",
        ingress=ruleset.DirectionRuleset(
            isolated=True,
            port_peers=(ruleset.PeerPort(peer_ip, TCP, P(80, 80)),),
            policies=("a/b",),
        ),
        egress=ruleset.DirectionRuleset(
            isolated=True,
            port_peers=(ruleset.PeerPort(peer_ip, UDP, P(53, 53)),),
            policies=("a/b",),
        ),
    )
    apply_and_check(pod, rs, ["eth0"])
    # Allowed egress reaches the peer.
    assert udp_exchange(pod, peer, "198.18.0.20", 53, 40001) == ("sent", "got hi 40001")
    # Denied egress: send() succeeds (no EPERM), the datagram never arrives.
    assert udp_exchange(pod, peer, "198.18.0.20", 9999, 40002) == ("sent", "timeout")
    # The denied flow's conntrack entry must not admit the peer's "reply" (ingress denies UDP).
    assert udp_exchange(peer, pod, "198.18.0.10", 40002, 9999) == ("sent", "timeout")
    # Plain denied ingress.
    assert udp_exchange(peer, pod, "198.18.0.10", 80, 40003) == ("sent", "timeout")
    # Without policy the same exchanges pass (the test setup itself works).
    load(pod, render_nft.delete_script())
    assert udp_exchange(peer, pod, "198.18.0.10", 80, 40004) == ("sent", "got hi 40004")
