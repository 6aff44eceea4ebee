"""Anti-spoofing against the real kernel, on both backends: what a pod with NET_RAW forges
(another address as source, over an IP_HDRINCL raw socket for IPv4 and IPv6, or a packet socket
claiming another protocol; an ARP request or a neighbour advertisement claiming a peer's
address) never leaves its interface, while its own packets and neighbour discovery do. The
peer namespace listens (UDP) and captures (packet socket); drops are counted and logged.

Namespaces come from the fixtures of tests/kernel/conftest.py (`psg-...`, deleted).
"""

from __future__ import annotations

import time

import pytest

from agent.calc import containment, intervals, ruleset
from agent.dataplane import client as dp_client
from agent.dataplane.nft import render as render_nft
from tests.support import dataplane as dpt
from tests.support import kernel, rawpackets
from tests.support.kernel import run

POD4, PEER4, OTHER4, NODE4 = "198.18.0.10", "198.18.0.20", "198.18.0.30", "198.18.0.1"
POD6, PEER6, OTHER6 = "fd00:198:18::10", "fd00:198:18::20", "fd00:198:18::30"
A = intervals.address_range
BACKENDS = kernel.BACKENDS


def program(pod: str, backend_name: str, spoof: bool = True) -> None:
    """Commit the pod's ruleset (anti-spoofing on or off) through the real worker."""
    link = containment.link([kernel.link_local(pod, "eth0")], [])
    anti = ruleset.AntiSpoof(own=(A(POD4), A(POD6)), link_local=link.link_local)
    rs = ruleset.PodRuleset("prod", "web", anti_spoof=anti if spoof else None, link=link)
    kernel.commit(pod, rs, backend_name)


def received(peer: str, listen: str, sends: list[tuple[str, ...]], pod: str) -> list[str]:
    return rawpackets.received(peer, listen, pod, sends)


def spoofed_count(pod: str, backend_name: str) -> int:
    async def go(client: dp_client.WorkerClient) -> dict[str, dict[str, int]]:
        return await dpt.counters(client, {"k": kernel.target(pod)}, backend_name)

    counts = kernel.with_worker(go).get("k", {})
    name = render_nft.counter_name(ruleset.Direction.EGRESS, "spoofed", ruleset.PolicyMode.ENFORCE)
    return counts.get(name, 0)


def mac(ns: str, dev: str) -> str:
    return run("ip", "netns", "exec", ns, "cat", f"/sys/class/net/{dev}/address").strip()


@pytest.mark.parametrize("backend", BACKENDS)
def test_forged_sources_never_leave_the_pod_its_own_do(
    dual_stack: tuple[str, str], backend: str
) -> None:
    pod, peer = dual_stack
    forged4 = [("raw4", OTHER4, PEER4), ("raw4", NODE4, PEER4)]
    frame = ("frame4", OTHER4, PEER4, mac(peer, "eth0p"), "0x0806")  # claims to be ARP
    program(pod, backend, spoof=False)  # the namespace opted out: forgeries go through
    assert sorted(received(peer, "0.0.0.0", [*forged4, frame], pod)) == [NODE4, OTHER4, OTHER4]
    assert received(peer, "::", [("raw6", OTHER6, PEER6)], pod) == [OTHER6]
    program(pod, backend)
    assert received(peer, "0.0.0.0", [*forged4, frame, ("raw4", POD4, PEER4)], pod) == [POD4]
    assert received(peer, "::", [("raw6", OTHER6, PEER6), ("raw6", POD6, PEER6)], pod) == [POD6]
    assert spoofed_count(pod, backend) >= 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_forged_arp_and_neighbour_advertisements_do_not_poison_the_peer(
    dual_stack: tuple[str, str], backend: str
) -> None:
    pod, peer = dual_stack
    # The peer knows OTHER6 at some address already (a stale entry an advertisement overrides).
    run(
        "ip",
        "-n",
        peer,
        "neigh",
        "replace",
        OTHER6,
        "lladdr",
        "02:00:00:00:00:30",
        "dev",
        "eth0p",
        "nud",
        "stale",
    )
    program(pod, backend)
    rawpackets.run_send(pod, "arp", OTHER4, PEER4)  # "OTHER4 is at my MAC", asking for PEER4
    rawpackets.run_send(pod, "na6", POD6, "ff02::1", OTHER6)  # "OTHER6 is at my MAC"
    time.sleep(0.3)
    neighbours = run("ip", "-n", peer, "neigh", "show", "dev", "eth0p")
    assert OTHER4 not in neighbours
    assert "02:00:00:00:00:30" in next(line for line in neighbours.splitlines() if OTHER6 in line)
    assert spoofed_count(pod, backend) >= 2
    # The pod's own neighbour discovery still works both ways (IPv6 to the peer and back).
    run("ip", "-n", pod, "neigh", "flush", "dev", "eth0")
    run("ip", "-n", peer, "neigh", "flush", "dev", "eth0p")
    assert received(peer, "::", [("raw6", POD6, PEER6)], pod) == [POD6]
    assert received(peer, "0.0.0.0", [("raw4", POD4, PEER4)], pod) == [POD4]
    assert POD6 in run("ip", "-n", peer, "neigh", "show", "dev", "eth0p")


def test_a_forged_packet_is_logged_with_its_reason_and_forged_source(
    dual_stack: tuple[str, str],
) -> None:
    pod, _peer = dual_stack
    program(pod, "nftables")
    reader = kernel.ReaderProc()
    try:
        st = kernel.target(pod)
        reader.send(op="open", key="k", path=st.path, ino=st.ino)
        reader.wait(lambda m: m.get("opened") == "k")
        rawpackets.run_send(pod, "raw4", OTHER4, PEER4)
        rawpackets.run_send(pod, "arp", OTHER4, PEER4)
        prefix = "podseg egress spoofed enforce"
        udp = reader.wait(
            lambda m: any(p[1] == OTHER4 and p[3] == 17 for p in m.get("packets", []))
        )
        assert next(p for p in udp["packets"] if p[1] == OTHER4)[:5] == [
            prefix,
            OTHER4,
            PEER4,
            17,
            4444,
        ]
        arp = reader.wait(lambda m: any(p[3] == 0x100 for p in m.get("packets", [])))
        assert next(p[:4] for p in arp["packets"] if p[3] == 0x100) == [
            prefix,
            OTHER4,
            PEER4,
            0x100,
        ]
    finally:
        reader.close()
