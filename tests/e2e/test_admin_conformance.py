"""Admin-tier conformance: the cases of the network-policy-api conformance suite (v0.3.0),
rebuilt on the sandbox with the real agent, once per dataplane backend.

The model is upstream's: five namespaces `network-policy-conformance-<house>` labelled
`conformance-house=<house>` (and `kubernetes.io/metadata.name`), two pods per house workload
(`<workload>-0`, `<workload>-1`, labelled `conformance-house` and
`statefulset.kubernetes.io/pod-name`) with servers on TCP and UDP 80, 8080, 53 and 5353 and the
container ports `web` (80/TCP) and `dns` (53/UDP). The fifth house (forbidden-forrest) holds
host-network pods upstream; here it is a namespace only (the node-peer cases need host-network
servers, which the sandbox does not model).

Each case applies ClusterNetworkPolicy objects (policy.networking.k8s.io/v1beta1) through the
API emulator, then probes the connections the upstream case pokes, from inside the client pod,
until every verdict is the expected one or the deadline passes; every verdict is also checked
against `podseg explain`. Rule reorders, action and priority changes are merge PATCHes of the
stored object. SCTP rules are part of the policies (the agent must program them) but are not
probed: this kernel has no SCTP.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from agent import config
from agent.calc import explain as calc_explain
from agent.commands import explain as explain_command
from agent.k8s import clients, snapshot
from testbed.sandbox import admin, probe
from testbed.sandbox import cluster as sandbox_cluster
from tests.support import live
from tests.support.polling import wait_for

API_VERSION = f"{admin.GROUP}/v1beta1"
KIND = "ClusterNetworkPolicy"
HOUSE = "conformance-house"
NS_NAME = "kubernetes.io/metadata.name"
POD_NAME = "statefulset.kubernetes.io/pod-name"
ROLE = "conformance-role"
WORKLOADS = {
    "gryffindor": "harry-potter",
    "slytherin": "draco-malfoy",
    "hufflepuff": "cedric-diggory",
    "ravenclaw": "luna-lovegood",
}
FOREST = "forbidden-forrest"
SERVE = (80, 8080, 53, 5353)
CONTAINER_PORTS = [
    {"name": "web", "containerPort": 80, "protocol": "TCP"},
    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
]
NAMED = {"web": ("tcp", 80), "dns": ("udp", 53)}
PORTS = {"tcp": (80, 8080), "udp": (53, 5353)}
PROBE_TIMEOUT = 0.8
DEADLINE = 30.0
INGRESS, EGRESS = "ingress", "egress"
ACCEPT, DENY, PASS = "Accept", "Deny", "Pass"
ADMIN, BASELINE = "Admin", "Baseline"


def namespace(house: str) -> str:
    return f"network-policy-conformance-{house}"


def pod(house: str, index: int) -> str:
    """The key of a house pod: `<namespace>/<workload>-<index>`."""
    return f"{namespace(house)}/{WORKLOADS[house]}-{index}"


def other(port: int) -> int:
    """The second server port of the same protocol."""
    for pair in PORTS.values():
        if port in pair:
            return pair[1 - pair.index(port)]
    raise ValueError(port)


# -- policy builders ----------------------------------------------------------------------
def sel(**labels: str) -> dict[str, Any]:
    return {"matchLabels": {k.replace("_", "-"): v for k, v in labels.items()}}


def ns_named(house: str) -> dict[str, Any]:
    """A `namespaces` peer or subject: the house namespace by its name label."""
    return {"namespaces": {"matchLabels": {NS_NAME: namespace(house)}}}


def house_pods(house: str) -> dict[str, Any]:
    """A `pods` peer or subject: the house pods of the house namespace, by house labels."""
    return {
        "pods": {
            "namespaceSelector": sel(conformance_house=house),
            "podSelector": sel(conformance_house=house),
        }
    }


def port(proto: str, number: int) -> dict[str, Any]:
    return {proto: {"destinationPort": {"number": number}}}


def port_range(proto: str, start: int, end: int) -> dict[str, Any]:
    return {proto: {"destinationPort": {"range": {"start": start, "end": end}}}}


def rule(
    direction: str,
    name: str,
    action: str,
    peers: Sequence[dict[str, Any]],
    protocols: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "action": action,
        ("from" if direction == INGRESS else "to"): list(peers),
    }
    if protocols:
        out["protocols"] = list(protocols)
    return out


def cnp(
    name: str,
    tier: str,
    priority: int,
    subject: dict[str, Any],
    ingress: Sequence[dict[str, Any]] = (),
    egress: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    spec: dict[str, Any] = {"tier": tier, "priority": priority, "subject": subject}
    if ingress:
        spec["ingress"] = list(ingress)
    if egress:
        spec["egress"] = list(egress)
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}


# -- the running model ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Check:
    """`client` connects to `server` at `port`/`proto`; `reachable` is the upstream verdict."""

    client: str
    server: str
    proto: str
    port: int
    reachable: bool

    def __str__(self) -> str:
        want = "allowed" if self.reachable else "blocked"
        return f"{self.client} -> {self.server} {self.proto}/{self.port} {want}"


def check(client: str, server: str, proto: str, number: int, reachable: bool) -> Check:
    return Check(client, server, proto, number, reachable)


class Conformance:
    """The model cluster and the operations the upstream cases perform on it."""

    def __init__(self, cluster: sandbox_cluster.SandboxCluster, backend: str) -> None:
        self.cluster = cluster
        self.backend = backend
        self.names: set[str] = set()

    @property
    def agent(self) -> sandbox_cluster.AgentProcess:
        return self.cluster.agents["node-1"]

    def held(self) -> list[str]:
        """The admin policies the agent last logged as in effect."""
        lines = self.agent.events("admin_policies")
        return list(lines[-1]["policies"]) if lines else []

    def apply(self, *objects: dict[str, Any]) -> None:
        for obj in objects:
            admin.apply(self.cluster.api_client, obj)
            self.names.add(obj["metadata"]["name"])
        keys = {f"{KIND}/{obj['metadata']['name']}" for obj in objects}
        wait_for(lambda: keys <= set(self.held()), timeout=DEADLINE, what=f"agent holds {keys}")

    def update(self, name: str, change: Callable[[dict[str, Any]], None]) -> None:
        """GET the stored policy, change a copy of its spec, merge-PATCH the spec back."""
        path = admin.object_path(cnp(name, ADMIN, 0, {}))
        stored = admin.request(self.cluster.api_client, "GET", path)
        spec = copy.deepcopy(stored["spec"])
        change(spec)
        admin.request(self.cluster.api_client, "PATCH", path, {"spec": spec}, admin.MERGE_PATCH)

    def swap(self, name: str, direction: str, i: int, j: int) -> None:
        def change(spec: dict[str, Any]) -> None:
            rules = spec[direction]
            rules[i], rules[j] = rules[j], rules[i]

        self.update(name, change)

    def expect(self, checks: Sequence[Check], timeout: float = DEADLINE) -> None:
        """Probe until every check has its verdict (ok = allowed, timeout = blocked), then ask
        `podseg explain` the same questions; fail with the differences at the deadline."""
        cells = [(c.client, c.server, c.port, c.proto) for c in checks]
        want = {
            cell: probe.OK if c.reachable else probe.TIMEOUT
            for cell, c in zip(cells, checks, strict=True)
        }
        deadline = time.monotonic() + timeout
        while True:
            seen = probe.probe_cells(cells, self.cluster.pods, timeout=PROBE_TIMEOUT)
            wrong = [
                f"{c}: probe {seen[cell]}"
                for cell, c in zip(cells, checks, strict=True)
                if seen[cell] != want[cell]
            ]
            if not wrong:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"{len(wrong)} of {len(checks)} after {timeout}s:\n" + "\n".join(wrong))
        self.explain_agrees(checks)

    def explain_agrees(self, checks: Sequence[Check]) -> None:
        api = clients.api_client(self.cluster.kubeconfig)
        try:
            view = snapshot.load(api)
        finally:
            api.close()
        wrong = []
        for c in checks:
            found = explain_command.explain(
                view,
                c.client,
                str(self.cluster.pods[c.server].ipv4),
                c.port,
                c.proto.upper(),
                config.Settings("", None),
            )
            if (found.verdict == calc_explain.ALLOWED) != c.reachable:
                wrong.append(f"{c}: explain {found.verdict}")
        assert not wrong, "explain disagrees with the probes:\n" + "\n".join(wrong)

    def sctp_programmed(self, key: str, first: int, last: int) -> bool:
        """The pod's ruleset (the backend's own listing) matches SCTP at ports first..last:
        SCTP is checked at this level only. nftables: a rule or set element naming sctp with
        the port or range; iptables: each port as a `net,sctp:port` element of the ipsets."""
        netns = self.cluster.pods[key].netns
        command = ["nft", "list", "ruleset"] if self.backend == "nftables" else ["ipset", "list"]
        listing = subprocess.run(
            ["ip", "netns", "exec", netns, *command],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        if self.backend == "nftables":
            wanted = str(first) if first == last else f"{first}-{last}"
            return any("sctp" in line and wanted in line for line in listing.splitlines())
        return all(f"sctp:{n}" in listing for n in range(first, last + 1))

    def valid(self) -> None:
        """The agent took every part of every policy (SCTP and named ports included)."""
        assert not self.agent.events("admin_policy_invalid_parts")
        assert not [e for e in self.agent.lines if e.get("level") == "error"]

    def label_pod(self, key: str, value: str | None) -> None:
        self.cluster.label_pod(key, {ROLE: value})

    def reset(self) -> None:
        """No admin policies or NetworkPolicies, the original labels; the agent caught up."""
        for name in sorted(self.names):
            admin.delete(self.cluster.api_client, cnp(name, ADMIN, 0, {}))
        self.names.clear()
        self.cluster.delete_all_policies()
        for house in (*WORKLOADS, FOREST):
            self.cluster.label_namespace(namespace(house), {HOUSE: house})
        for house in WORKLOADS:
            for index in (0, 1):
                self.cluster.label_pod(pod(house, index), {ROLE: None})
        wait_for(lambda: self.held() == [], timeout=DEADLINE, what="no admin policies held")


@pytest.fixture(scope="module", params=live.BACKENDS)
def houses(request: pytest.FixtureRequest) -> Iterator[Conformance]:
    args = live.backend_args(request)
    with sandbox_cluster.SandboxCluster(nodes=("node-1",)) as cluster:
        cluster.install_admin_crds()
        for house in (*WORKLOADS, FOREST):
            cluster.ensure_namespace(namespace(house), {HOUSE: house, NS_NAME: namespace(house)})
        for house, workload in WORKLOADS.items():
            for index in (0, 1):
                name = f"{workload}-{index}"
                cluster.add_pod(
                    namespace(house),
                    name,
                    {HOUSE: house, POD_NAME: name},
                    ports=CONTAINER_PORTS,
                    serve=SERVE,
                )
        cluster.start_agent("node-1", [*args, "--no-tamper-watch"])
        yield Conformance(cluster, args[-1])


@pytest.fixture
def model(houses: Conformance) -> Iterator[Conformance]:
    houses.reset()
    yield houses
    houses.valid()
    houses.reset()


# -- one protocol, one direction: the ingress/egress TCP/UDP cases of both tiers -------------
@dataclasses.dataclass(frozen=True)
class Gress:
    """An upstream single-direction policy: the subject's traffic with `everything` is
    decided by its first rules (Accept, Deny, [Pass]); with `port_house` at `port` by Deny
    [then Pass]; with `accept_house` accepted at `accept_port` only (Deny for the rest)."""

    name: str
    tier: str
    priority: int
    direction: str
    proto: str
    subject: str
    everything: str
    port_house: str
    port: int
    accept_house: str
    accept_port: int

    @property
    def admin(self) -> bool:
        return self.tier == ADMIN

    @property
    def accept_index(self) -> int:
        return 5 if self.admin else 3

    def policy(self) -> dict[str, Any]:
        d, everything, at = (
            self.direction,
            [ns_named(self.everything)],
            [port(self.proto, self.port)],
        )
        rules = [
            rule(d, "accept-everything", ACCEPT, everything),
            rule(d, "deny-everything", DENY, everything),
        ]
        if self.admin:
            rules.append(rule(d, "pass-everything", PASS, everything))
        rules.append(rule(d, "deny-at-port", DENY, [ns_named(self.port_house)], at))
        if self.admin:
            rules.append(rule(d, "pass-at-port", PASS, [ns_named(self.port_house)], at))
        accept_peer = [ns_named(self.accept_house)]
        rules.append(
            rule(d, "accept-at-port", ACCEPT, accept_peer, [port(self.proto, self.accept_port)])
        )
        rules.append(rule(d, "deny-the-rest", DENY, accept_peer))
        by_direction = {"ingress": rules} if d == INGRESS else {"egress": rules}
        return cnp(self.name, self.tier, self.priority, ns_named(self.subject), **by_direction)

    def conn(
        self, subject: int, house: str, peer: int, number: int, reachable: bool, proto: str = ""
    ) -> Check:
        """A connection between subject pod `subject` and `house` pod `peer`, in the policy's
        direction (ingress: the peer connects to the subject)."""
        mine, theirs = pod(self.subject, subject), pod(house, peer)
        client, server = (theirs, mine) if self.direction == INGRESS else (mine, theirs)
        return check(client, server, proto or self.proto, number, reachable)

    def reverse(self, subject: int, house: str, peer: int, number: int) -> Check:
        """The other direction, which the policy does not decide: allowed."""
        mine, theirs = pod(self.subject, subject), pod(house, peer)
        client, server = (mine, theirs) if self.direction == INGRESS else (theirs, mine)
        return check(client, server, "tcp", number, True)


GRESS = [
    Gress(
        "ingress-tcp",
        ADMIN,
        3,
        INGRESS,
        "tcp",
        "gryffindor",
        "ravenclaw",
        "slytherin",
        80,
        "hufflepuff",
        80,
    ),
    Gress(
        "ingress-udp",
        ADMIN,
        4,
        INGRESS,
        "udp",
        "hufflepuff",
        "ravenclaw",
        "slytherin",
        5353,
        "gryffindor",
        53,
    ),
    Gress(
        "egress-tcp",
        ADMIN,
        6,
        EGRESS,
        "tcp",
        "gryffindor",
        "ravenclaw",
        "slytherin",
        80,
        "hufflepuff",
        8080,
    ),
    Gress(
        "egress-udp",
        ADMIN,
        7,
        EGRESS,
        "udp",
        "hufflepuff",
        "ravenclaw",
        "slytherin",
        5353,
        "gryffindor",
        53,
    ),
    Gress(
        "default",
        BASELINE,
        10,
        INGRESS,
        "tcp",
        "gryffindor",
        "ravenclaw",
        "slytherin",
        80,
        "hufflepuff",
        80,
    ),
    Gress(
        "default",
        BASELINE,
        10,
        INGRESS,
        "udp",
        "hufflepuff",
        "ravenclaw",
        "slytherin",
        5353,
        "gryffindor",
        53,
    ),
    Gress(
        "default",
        BASELINE,
        10,
        EGRESS,
        "tcp",
        "gryffindor",
        "ravenclaw",
        "slytherin",
        80,
        "hufflepuff",
        8080,
    ),
    Gress(
        "default",
        BASELINE,
        10,
        EGRESS,
        "udp",
        "hufflepuff",
        "ravenclaw",
        "slytherin",
        5353,
        "gryffindor",
        53,
    ),
]


def gress_id(case: Gress) -> str:
    return f"{case.tier.lower()}-{case.direction}-{case.proto}"


@pytest.mark.parametrize("case", GRESS, ids=gress_id)
def test_gress_rules(model: Conformance, case: Gress) -> None:
    """CNP{Admin,Baseline}Tier{Ingress,Egress}{TCP,UDP}: rule order decides, ports narrow."""
    model.apply(case.policy())
    p0, p1 = PORTS[case.proto]
    e, s, a = case.everything, case.port_house, case.accept_house
    # Accept is the first rule for `everything`; Accept at one port, Deny for the rest.
    model.expect(
        [
            case.conn(0, e, 0, p0, True),
            case.conn(1, e, 1, p1, True),
            case.conn(1, a, 0, case.accept_port, True),
            case.conn(1, a, 1, other(case.accept_port), False),
        ]
    )
    if case.proto == "tcp":  # the direction without rules is not decided by the policy
        model.expect([case.reverse(0, e, 0, 80), case.reverse(1, s, 0, 80)])
    # Deny moved first: every connection with `everything` is blocked.
    model.swap(case.name, case.direction, 0, 1)
    model.expect([case.conn(1, e, 0, p0, False), case.conn(1, e, 1, p1, False)])
    # Deny at one port; the other port matches no rule.
    model.expect([case.conn(0, s, 0, case.port, False), case.conn(0, s, 1, other(case.port), True)])
    if not case.admin:
        return
    # Pass moved first: the tier is skipped, nothing below decides, allowed.
    model.swap(case.name, case.direction, 0, 2)
    model.expect([case.conn(0, e, 0, p0, True), case.conn(0, e, 1, p1, True)])
    # Pass before the Deny at the port.
    model.swap(case.name, case.direction, 3, 4)
    model.expect([case.conn(0, s, 0, case.port, True), case.conn(0, s, 1, other(case.port), True)])


NAMED_CASES = [
    (GRESS[1], "dns"),  # CNPAdminTierIngressNamedPort
    (GRESS[2], "web"),  # CNPAdminTierEgressNamedPort
    (GRESS[4], "web"),  # CNPBaselineTierIngressNamedPort
    (GRESS[7], "dns"),  # CNPBaselineTierEgressNamedPort
]


@pytest.mark.parametrize(
    "case,name", NAMED_CASES, ids=lambda v: gress_id(v) if isinstance(v, Gress) else v
)
def test_named_port(model: Conformance, case: Gress, name: str) -> None:
    """The accept-at-port rule rewritten to a named port: it resolves to the number (and
    protocol) the destination pod declares under that name."""
    model.apply(case.policy())

    def named(spec: dict[str, Any]) -> None:
        spec[case.direction][case.accept_index]["protocols"] = [{"destinationNamedPort": name}]

    model.update(case.name, named)
    proto, number = NAMED[name]
    a = case.accept_house
    model.expect(
        [
            case.conn(0, a, 1, number, True, proto),
            case.conn(1, a, 1, other(number), False, proto),
        ]
    )


# -- both directions, several protocols ----------------------------------------------------
def gress_combined(tier: str, priority: int) -> dict[str, Any]:
    """The upstream combined policy: gryffindor's ingress and egress with ravenclaw (Accept,
    Deny[, Pass]), slytherin (Deny[, Pass] at tcp 80, udp 53, sctp 9003) and hufflepuff
    (Accept at a TCP, UDP and SCTP port each, Deny for the rest)."""
    admin_tier = tier == ADMIN
    deny_at = [port("tcp", 80), port("udp", 53), port("sctp", 9003)]
    rules = {}
    for d, tcp_accept in ((EGRESS, 8080), (INGRESS, 80)):
        accept_at = [port("tcp", tcp_accept), port("udp", 5353)]
        if admin_tier:
            accept_at.append(port("sctp", 9003))
        r = [
            rule(d, "accept-ravenclaw", ACCEPT, [ns_named("ravenclaw")]),
            rule(d, "deny-ravenclaw", DENY, [ns_named("ravenclaw")]),
        ]
        if admin_tier:
            r.append(rule(d, "pass-ravenclaw", PASS, [ns_named("ravenclaw")]))
        r.append(rule(d, "deny-slytherin-at-ports", DENY, [ns_named("slytherin")], deny_at))
        if admin_tier:
            r.append(rule(d, "pass-slytherin-at-ports", PASS, [ns_named("slytherin")], deny_at))
        r.append(rule(d, "accept-hufflepuff-at-ports", ACCEPT, [ns_named("hufflepuff")], accept_at))
        r.append(rule(d, "deny-hufflepuff", DENY, [ns_named("hufflepuff")]))
        rules[d] = r
    name = "gress-rules" if admin_tier else "default"
    return cnp(name, tier, priority, ns_named("gryffindor"), rules[INGRESS], rules[EGRESS])


@pytest.mark.parametrize("tier,priority", [(ADMIN, 15), (BASELINE, 10)], ids=["admin", "baseline"])
def test_gress_combined(model: Conformance, tier: str, priority: int) -> None:
    """CNP{Admin,Baseline}TierGress."""
    policy = gress_combined(tier, priority)
    name = policy["metadata"]["name"]
    model.apply(policy)
    h, d, c, lu = (
        functools.partial(pod, w) for w in ("gryffindor", "slytherin", "hufflepuff", "ravenclaw")
    )
    model.expect(
        [
            check(h(0), lu(0), "tcp", 80, True),
            check(h(1), lu(0), "udp", 53, True),
            check(lu(0), h(0), "tcp", 80, True),
            check(lu(1), h(0), "udp", 53, True),
            check(h(0), c(1), "tcp", 8080, True),
            check(h(1), c(1), "tcp", 80, False),
            check(h(0), c(1), "udp", 5353, True),
            check(h(1), c(1), "udp", 53, False),
            check(c(0), h(1), "tcp", 80, True),
            check(c(1), h(1), "tcp", 8080, False),
            check(c(0), h(1), "udp", 5353, True),
            check(c(1), h(1), "udp", 53, False),
        ]
    )
    assert model.sctp_programmed(h(0), 9003, 9003), "no SCTP rule for port 9003"
    model.update(name, swap_both(0, 1))
    at_ports = [
        check(h(0), d(0), "tcp", 80, False),
        check(h(1), d(0), "tcp", 8080, True),
        check(h(0), d(0), "udp", 53, False),
        check(h(1), d(0), "udp", 5353, True),
        check(d(0), h(0), "tcp", 80, False),
        check(d(1), h(0), "tcp", 8080, True),
        check(d(0), h(0), "udp", 53, False),
        check(d(1), h(0), "udp", 5353, True),
    ]
    model.expect(
        [
            check(h(0), lu(1), "tcp", 80, False),
            check(h(1), lu(1), "udp", 53, False),
            check(lu(0), h(1), "tcp", 80, False),
            check(lu(1), h(1), "udp", 53, False),
            *at_ports,
        ]
    )
    if tier != ADMIN:
        return
    model.update(name, swap_both(0, 2))
    model.expect(
        [
            check(h(0), lu(0), "tcp", 80, True),
            check(h(0), lu(0), "udp", 5353, True),
            check(lu(0), h(0), "tcp", 80, True),
            check(lu(1), h(0), "udp", 53, True),
        ]
    )
    model.update(name, swap_both(3, 4))
    model.expect([dataclasses.replace(x, reachable=True) for x in at_ports])


def swap_both(i: int, j: int) -> Callable[[dict[str, Any]], None]:
    """Swap rules i and j of both the ingress and the egress list."""

    def change(spec: dict[str, Any]) -> None:
        for rules in (spec[INGRESS], spec[EGRESS]):
            rules[i], rules[j] = rules[j], rules[i]

    return change


# -- port ranges ---------------------------------------------------------------------------
@pytest.mark.parametrize("tier,priority", [(ADMIN, 9), (BASELINE, 10)], ids=["admin", "baseline"])
def test_port_ranges(model: Conformance, tier: str, priority: int) -> None:
    """CNP{Admin,Baseline}TierPortRange: Accept a TCP range from/to ravenclaw, a UDP range
    from/to hufflepuff, an SCTP range from/to slytherin, Deny every house namespace else."""
    every_house = {"namespaces": {"matchExpressions": [{"key": HOUSE, "operator": "Exists"}]}}
    rules = {}
    for d in (INGRESS, EGRESS):
        rules[d] = [
            rule(
                d,
                "accept-ravenclaw-tcp-range",
                ACCEPT,
                [ns_named("ravenclaw")],
                [port_range("tcp", 80, 8080)],
            ),
            rule(
                d,
                "accept-hufflepuff-udp-range",
                ACCEPT,
                [ns_named("hufflepuff")],
                [port_range("udp", 53, 5353)],
            ),
            rule(
                d,
                "accept-slytherin-sctp-range",
                ACCEPT,
                [ns_named("slytherin")],
                [port_range("sctp", 9003, 9005)],
            ),
            rule(d, "deny-the-rest", DENY, [every_house]),
        ]
    model.apply(
        cnp(
            "port-range-rules",
            tier,
            priority,
            ns_named("gryffindor"),
            rules[INGRESS],
            rules[EGRESS],
        )
    )
    h, d_, c, lu = (
        functools.partial(pod, w) for w in ("gryffindor", "slytherin", "hufflepuff", "ravenclaw")
    )
    model.expect(
        [
            # egress
            check(h(0), lu(0), "tcp", 80, True),
            check(h(0), lu(0), "tcp", 8080, True),
            check(h(1), lu(0), "udp", 53, False),
            check(h(0), c(0), "udp", 53, True),
            check(h(0), c(0), "udp", 5353, True),
            check(h(1), c(0), "tcp", 80, False),
            check(h(1), d_(0), "tcp", 80, False),
            # ingress
            check(lu(0), h(0), "tcp", 80, True),
            check(lu(0), h(0), "tcp", 8080, True),
            check(lu(1), h(0), "udp", 53, False),
            check(c(0), h(0), "udp", 53, True),
            check(c(0), h(0), "udp", 5353, True),
            check(c(1), h(0), "tcp", 80, False),
            check(d_(1), h(0), "tcp", 80, False),
        ]
    )
    assert model.sctp_programmed(h(0), 9003, 9005), "no SCTP rule for the range 9003-9005"


# -- pod selectors, label changes ----------------------------------------------------------
def by_name(house: str, index: int) -> dict[str, Any]:
    """A `pods` peer: one house pod by its pod-name label, in the house namespace."""
    name = f"{WORKLOADS[house]}-{index}"
    return {
        "pods": {
            "namespaceSelector": sel(conformance_house=house),
            "podSelector": {"matchLabels": {POD_NAME: name}},
        }
    }


def any_namespace(**labels: str) -> dict[str, Any]:
    """A `pods` peer or subject by pod labels only, in every namespace."""
    return {"pods": {"podSelector": sel(**labels)}}


@pytest.mark.parametrize(
    "tier,priorities", [(ADMIN, (20, 21)), (BASELINE, (10, 10))], ids=["admin", "baseline"]
)
def test_pod_selectors(model: Conformance, tier: str, priorities: tuple[int, int]) -> None:
    """CNP{Admin,Baseline}TierPodSelector: pod selectors in peers and subjects, following pod
    label changes."""
    first, second = priorities
    model.apply(
        cnp(
            "pod-selector-rules",
            tier,
            first,
            any_namespace(conformance_house="gryffindor"),
            ingress=[
                rule(INGRESS, "accept-draco-malfoy-0", ACCEPT, [by_name("slytherin", 0)]),
                rule(
                    INGRESS,
                    "deny-slytherin-pods",
                    DENY,
                    [any_namespace(conformance_house="slytherin")],
                ),
                rule(
                    INGRESS,
                    "deny-blocked-hufflepuff-pods",
                    DENY,
                    [
                        {
                            "pods": {
                                "namespaceSelector": sel(conformance_house="hufflepuff"),
                                "podSelector": sel(conformance_role="blocked"),
                            }
                        }
                    ],
                ),
            ],
            egress=[
                rule(
                    EGRESS,
                    "accept-luna-lovegood-0-tcp-80",
                    ACCEPT,
                    [by_name("ravenclaw", 0)],
                    [port("tcp", 80)],
                ),
                rule(
                    EGRESS,
                    "deny-ravenclaw-pods",
                    DENY,
                    [any_namespace(conformance_house="ravenclaw")],
                ),
            ],
        ),
        cnp(
            "label-selected-subject-rules",
            tier,
            second,
            {
                "pods": {
                    "namespaceSelector": sel(conformance_house="ravenclaw"),
                    "podSelector": sel(conformance_role="restricted"),
                }
            },
            egress=[rule(EGRESS, "deny-slytherin", DENY, [ns_named("slytherin")])],
        ),
    )
    h, d, c, lu = (
        functools.partial(pod, w) for w in ("gryffindor", "slytherin", "hufflepuff", "ravenclaw")
    )
    # Egress peers: one ravenclaw pod by name at one port, the others denied.
    model.expect(
        [
            check(h(0), lu(0), "tcp", 8080, False),
            check(h(0), lu(0), "tcp", 80, True),
            check(h(1), lu(1), "tcp", 80, False),
            # Ingress peers: one slytherin pod by name, the others denied.
            check(d(1), h(1), "tcp", 80, False),
            check(d(0), h(0), "tcp", 80, True),
            # Subject: ravenclaw pods without the role label are not subjects.
            check(d(0), lu(1), "tcp", 80, True),
            check(lu(0), d(0), "tcp", 80, True),
        ]
    )
    # A hufflepuff pod labelled blocked is denied; the label moves, the verdicts follow.
    model.label_pod(c(0), "blocked")
    model.expect([check(c(0), h(0), "tcp", 80, False), check(c(1), h(0), "tcp", 80, True)])
    model.label_pod(c(0), None)
    model.label_pod(c(1), "blocked")
    model.expect([check(c(0), h(0), "tcp", 80, True), check(c(1), h(0), "tcp", 80, False)])
    # A ravenclaw pod labelled restricted becomes a subject.
    model.label_pod(lu(0), "restricted")
    model.expect([check(lu(0), d(0), "tcp", 80, False), check(lu(1), d(0), "tcp", 80, True)])
    model.label_pod(lu(0), None)
    model.label_pod(lu(1), "restricted")
    model.expect([check(lu(0), d(0), "tcp", 80, True), check(lu(1), d(0), "tcp", 80, False)])


# -- priorities ----------------------------------------------------------------------------
def test_priority_field(model: Conformance) -> None:
    """CNPAdminTierPriorityField: a Deny at priority 50 wins over a Pass at 60; the Pass moved
    to 40 wins, and the Baseline Accept decides."""

    def both(name: str, tier: str, priority: int, action: str) -> dict[str, Any]:
        return cnp(
            name,
            tier,
            priority,
            house_pods("gryffindor"),
            ingress=[
                rule(INGRESS, f"{action.lower()}-from-slytherin", action, [house_pods("slytherin")])
            ],
            egress=[
                rule(EGRESS, f"{action.lower()}-to-slytherin", action, [house_pods("slytherin")])
            ],
        )

    model.apply(
        both("priority-50-example", ADMIN, 50, DENY),
        both("old-priority-60-new-priority-40-example", ADMIN, 60, PASS),
        both("default", BASELINE, 10, ACCEPT),
    )
    h, d = (functools.partial(pod, w) for w in ("gryffindor", "slytherin"))
    pairs = [(d(0), h(0), 80), (d(1), h(0), 8080), (h(0), d(0), 80), (h(1), d(0), 8080)]
    model.expect([check(a, b, "tcp", n, False) for a, b, n in pairs])
    model.update("old-priority-60-new-priority-40-example", lambda spec: spec.update(priority=40))
    model.expect([check(a, b, "tcp", n, True) for a, b, n in pairs])


@pytest.mark.parametrize(
    "tier,priority,prefix",
    [(ADMIN, 15, ""), (BASELINE, 10, "baseline-")],
    ids=["admin", "baseline"],
)
def test_same_priority(model: Conformance, tier: str, priority: int, prefix: str) -> None:
    """CNP{Admin,Baseline}TierSamePriority: three policies at one priority each keep to their
    own subjects and peers."""

    def deny_between(subject: str, peer: str, number: int) -> dict[str, Any]:
        at = [port("tcp", number)]
        return cnp(
            f"{prefix}same-priority-{subject}-{peer}",
            tier,
            priority,
            ns_named(subject),
            ingress=[rule(INGRESS, f"deny-from-{peer}", DENY, [ns_named(peer)], at)],
            egress=[rule(EGRESS, f"deny-to-{peer}", DENY, [ns_named(peer)], at)],
        )

    model.apply(
        deny_between("gryffindor", "slytherin", 80),
        deny_between("gryffindor", "hufflepuff", 80),
        deny_between("hufflepuff", "slytherin", 8080),
    )
    h, d, c, lu = (
        functools.partial(pod, w) for w in ("gryffindor", "slytherin", "hufflepuff", "ravenclaw")
    )
    model.expect(
        [
            check(d(0), h(0), "tcp", 80, False),
            check(h(0), d(0), "tcp", 80, False),
            check(c(0), h(0), "tcp", 80, False),
            check(h(1), c(0), "tcp", 80, False),
            check(d(1), c(0), "tcp", 8080, False),
            check(c(1), d(0), "tcp", 8080, False),
            # One policy's port is not another's.
            check(d(0), h(0), "tcp", 8080, True),
            check(h(0), d(0), "tcp", 8080, True),
            check(d(1), c(0), "tcp", 80, True),
            check(c(0), d(0), "tcp", 80, True),
            # Matching no policy.
            check(lu(0), h(0), "tcp", 80, True),
            check(h(1), lu(0), "tcp", 80, True),
        ]
    )


# -- egress to networks --------------------------------------------------------------------
@pytest.mark.parametrize("tier", [ADMIN, BASELINE], ids=["admin", "baseline"])
def test_egress_inline_cidr(model: Conformance, tier: str) -> None:
    """CNP{Admin,Baseline}TierEgressInlineCIDRPeers: Accept to slytherin pods, Deny to every
    network; then an Accept to two pod addresses put first."""
    if tier == ADMIN:
        name, priority, subject = "inline-cidr-as-peers-example", 85, house_pods("gryffindor")
    else:
        name, priority, subject = "default", 10, ns_named("gryffindor")
    model.apply(
        cnp(
            name,
            tier,
            priority,
            subject,
            egress=[
                rule(EGRESS, "accept-to-slytherin", ACCEPT, [house_pods("slytherin")]),
                rule(EGRESS, "deny-to-internet", DENY, [{"networks": ["0.0.0.0/0", "::/0"]}]),
            ],
        )
    )
    h, d, c, lu = (
        functools.partial(pod, w) for w in ("gryffindor", "slytherin", "hufflepuff", "ravenclaw")
    )

    def to(server: str, reachable: bool) -> list[Check]:
        return [
            check(h(1), server, "tcp", 80, reachable),
            check(h(1), server, "udp", 53, reachable),
        ]

    model.expect([*to(lu(0), False), *to(c(0), False), *to(d(0), True)])
    # Slytherin's namespace loses its house label: the pods peer no longer selects it.
    model.cluster.label_namespace(namespace("slytherin"), {HOUSE: "denied-namespace-label"})
    model.expect(to(d(0), False))
    model.cluster.label_namespace(namespace("slytherin"), {HOUSE: "slytherin"})
    model.expect(to(d(0), True))

    def first_accept(spec: dict[str, Any]) -> None:
        addresses = [f"{model.cluster.pods[key].ipv4}/32" for key in (lu(0), c(0))]
        spec["egress"].insert(
            0, rule(EGRESS, "accept-to-pod-addresses", ACCEPT, [{"networks": addresses}])
        )

    model.update(name, first_accept)
    model.expect([*to(lu(0), True), *to(c(0), True), *to(lu(1), False), *to(c(1), False)])


# -- the tiers with NetworkPolicy ----------------------------------------------------------
def test_integration_with_network_policy(model: Conformance) -> None:
    """CNPAdminTierIntegration: an Admin Deny wins over a NetworkPolicy allow; turned into Pass
    the NetworkPolicy decides (allow); without the NetworkPolicy the Baseline Deny decides."""
    houses_sel = {"namespaces": sel(conformance_house="gryffindor")}
    slytherin = [{"namespaces": sel(conformance_house="slytherin")}]

    def deny(name: str, tier: str) -> dict[str, Any]:
        return cnp(
            name,
            tier,
            10,
            houses_sel,
            ingress=[rule(INGRESS, "deny-from-slytherin", DENY, slytherin)],
            egress=[rule(EGRESS, "deny-to-slytherin", DENY, slytherin)],
        )

    model.apply(deny("pass-example", ADMIN), deny("default", BASELINE))
    np_namespace = namespace("gryffindor")
    model.cluster.apply_policy(
        {
            "metadata": {"namespace": np_namespace, "name": "allow-gress-from-to-slytherin"},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"namespaceSelector": sel(conformance_house="slytherin")}]}],
                "egress": [{"to": [{"namespaceSelector": sel(conformance_house="slytherin")}]}],
            },
        }
    )
    h, d = (functools.partial(pod, w) for w in ("gryffindor", "slytherin"))
    inbound = [(d(0), h(0), 80), (d(1), h(0), 8080)]
    outbound = [(h(0), d(0), 80), (h(1), d(0), 8080)]
    model.expect([check(a, b, "tcp", n, False) for a, b, n in inbound + outbound])

    def to_pass(direction: str) -> Callable[[dict[str, Any]], None]:
        return lambda spec: spec[direction][0].update(action=PASS)

    model.update("pass-example", to_pass(INGRESS))
    model.expect([check(a, b, "tcp", n, True) for a, b, n in inbound])
    model.update("pass-example", to_pass(EGRESS))
    model.expect([check(a, b, "tcp", n, True) for a, b, n in outbound])
    model.cluster.delete_policy(np_namespace, "allow-gress-from-to-slytherin")
    model.expect([check(a, b, "tcp", n, False) for a, b, n in inbound + outbound])
