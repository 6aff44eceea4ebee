"""The incremental calculator against the reference: seeded random walks of pod, namespace,
policy, Service, EndpointSlice and Node changes, and after EVERY step each local pod's result
equals `desired.desired` over a from-scratch `Cluster.of` (element for element, IPv4 and IPv6,
named ports, endPort, ipBlock/except, Services), and what `flush` reported adds up to it.
A calculator built from a whole snapshot equals one fed change by change.
Plus: a remote pod's label flip is handled without binding any local pod again and with a
canonicalisation of a handful of pieces, not of the whole set."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from agent import model
from agent.calc import containment, incremental, intervals, membership, ruleset, terms
from agent.calc import desired as calc_desired
from agent.tiers import compile as tiers_compile
from agent.tiers import model as tiers

NODE = "n1"
NAMESPACES = ("a", "b", "c")
GUARD = containment.parse_ports("tcp:22,tcp:10250")
_V4, _V6, _LL = 0xC612_0001, 0xFD00_0198_0018_0000 << 64 | 1, 0xFE80 << 112 | 1
# A namespace as the scan sees it (gateways, a link-local address): what a pod's ruleset gets
# per namespace on top of the snapshot (anti-spoofing, node guard of its gateway).
LINK = ruleset.Link(
    link_local=(ruleset.AddrRange(6, _LL | 6, _LL | 6),),
    gateways=(ruleset.AddrRange(4, _V4, _V4), ruleset.AddrRange(6, _V6, _V6)),
    scoped_gateways=(("eth0", ruleset.AddrRange(6, _LL, _LL)),),
    onlink=(ruleset.AddrRange(4, _V4, _V4),),
)
V4 = [f"10.0.0.{i}" for i in range(1, 13)]
V6 = [f"fd00::{i:x}" for i in range(1, 13)]
LABELS = {"app": ("web", "db", "api"), "tier": ("1", "2")}


def _selector(rng: random.Random, allow_none: bool = False) -> model.LabelSelector | None:
    roll = rng.random()
    if allow_none and roll < 0.15:
        return None
    if roll < 0.3:
        return model.LabelSelector()
    key = rng.choice(sorted(LABELS))
    labels = ((key, rng.choice(LABELS[key])),) if rng.random() < 0.7 else ()
    expressions: tuple[model.SelectorRequirement, ...] = ()
    if rng.random() < 0.4:
        other = rng.choice(sorted(LABELS))
        op = rng.choice(("In", "NotIn", "Exists", "DoesNotExist"))
        values = (rng.choice(LABELS[other]),) if op in ("In", "NotIn") else ()
        expressions = (model.SelectorRequirement(other, op, values),)
    return model.LabelSelector(labels, expressions)


def _ns_selector(rng: random.Random) -> model.LabelSelector:
    if rng.random() < 0.3:
        return model.LabelSelector((("kubernetes.io/metadata.name", rng.choice(NAMESPACES)),))
    if rng.random() < 0.2:
        return model.LabelSelector()
    return model.LabelSelector((("team", rng.choice(("x", "y"))),))


def _peer(rng: random.Random) -> model.Peer:
    roll = rng.random()
    if roll < 0.3:
        return model.Peer(pod_selector=_selector(rng))
    if roll < 0.5:
        return model.Peer(namespace_selector=_ns_selector(rng))
    if roll < 0.7:
        return model.Peer(pod_selector=_selector(rng), namespace_selector=_ns_selector(rng))
    if roll < 0.9:
        cidr, excepts = rng.choice(
            (
                ("10.0.0.0/29", ("10.0.0.4/30",)),
                ("10.0.0.0/24", ("10.0.0.8/31", "fd00::/120")),
                ("fd00::/120", ("fd00::4/126",)),
                ("0.0.0.0/0", ()),
                ("10.0.0.0/8", ("11.0.0.0/8",)),
            )
        )
        return model.Peer(ip_block=model.IPBlock(cidr, excepts))
    if roll < 0.95:
        return model.Peer(invalid=True)
    return model.Peer(pod_selector=_selector(rng), ip_block=model.IPBlock("10.0.0.0/30"))


def _port(rng: random.Random) -> model.PolicyPort:
    return rng.choice(
        (
            model.PolicyPort("TCP", 80),
            model.PolicyPort("TCP", 80, 90),
            model.PolicyPort("UDP", 53),
            model.PolicyPort("TCP", "http"),
            model.PolicyPort("UDP", "dns"),
            model.PolicyPort("TCP", "http", 90),
            model.PolicyPort("SCTP", None),
            model.PolicyPort("ICMP", 1),
            model.PolicyPort("TCP", 99, 10),
            model.PolicyPort("TCP", 8080, invalid=True),
        )
    )


def _rules(rng: random.Random) -> tuple[model.PolicyRule, ...]:
    return tuple(
        model.PolicyRule(
            peers=tuple(_peer(rng) for _ in range(rng.choice((0, 1, 1, 2)))),
            ports=tuple(_port(rng) for _ in range(rng.choice((0, 1, 1, 2)))),
        )
        for _ in range(rng.choice((0, 1, 1, 2)))
    )


def _policy(rng: random.Random, name: str) -> model.NetworkPolicy:
    return model.NetworkPolicy(
        namespace=rng.choice(NAMESPACES),
        name=name,
        pod_selector=_selector(rng, allow_none=True),
        ingress=_rules(rng),
        egress=_rules(rng),
        policy_types=rng.choice((("Ingress",), ("Egress",), ("Ingress", "Egress"))),
        resource_version=str(rng.random()),
    )


def _pod(rng: random.Random, key: str) -> model.Pod:
    namespace, name = key.split("/")
    labels = {k: rng.choice(v) for k, v in LABELS.items() if rng.random() < 0.7}
    if rng.random() < 0.05:
        labels["podseg.io/quarantine"] = "true"
    if rng.random() < 0.05:
        labels["podseg.io/mode"] = rng.choice(("visibility", "enforce", "bogus"))
    family = rng.random()
    ips = (rng.choice(V4),) if family < 0.5 else (rng.choice(V6),) if family < 0.7 else ()
    if family >= 0.7:
        ips = (rng.choice(V4), rng.choice(V6))
    ports = tuple(
        rng.sample(
            (
                model.ContainerPort(80, "TCP", "http"),
                model.ContainerPort(8080, "TCP", "http"),
                model.ContainerPort(53, "UDP", "dns"),
                model.ContainerPort(81, "TCP", "metrics"),
            ),
            rng.choice((0, 1, 2)),
        )
    )
    return model.Pod(
        namespace=namespace,
        name=name,
        uid=key,
        labels=labels,
        node_name=rng.choice((NODE, NODE, "n2")),
        host_network=rng.random() < 0.03,
        ips=ips if rng.random() < 0.95 else (),
        container_ports=ports,
        phase=rng.choice(("Running",) * 8 + ("Succeeded", "Pending")),
        resource_version=str(rng.random()),
    )


def _service(rng: random.Random, name: str) -> model.Service:
    return model.Service(
        namespace="a",
        name=name,
        cluster_ips=rng.choice((("10.0.0.100",), ("10.0.0.5",), ("10.0.0.100", "fd00::100"))),
        ports=(model.ServicePort(80, "TCP", "web"), model.ServicePort(53, "UDP", "dns")),
        selector={"app": "web"},
        internal_traffic_local=rng.random() < 0.3,
    )


def _slice(rng: random.Random, name: str) -> model.EndpointSlice:
    family = rng.choice(("IPv4", "IPv6"))
    pool = V4 if family == "IPv4" else V6
    return model.EndpointSlice(
        namespace="a",
        name=name,
        service=rng.choice(("s0", "s1")),
        address_type=family,
        endpoints=tuple(
            model.Endpoint((rng.choice(pool),), rng.random() < 0.8, rng.choice((NODE, "n2")))
            for _ in range(rng.choice((1, 2, 3)))
        ),
        ports=(
            model.EndpointPort(rng.choice((80, 8080)), "TCP", "web"),
            model.EndpointPort(53, "UDP", "dns"),
        ),
    )


def _admin_peer(rng: random.Random) -> tiers.Peer:
    roll = rng.random()
    if roll < 0.35:
        return tiers.Peer(namespaces=_ns_selector(rng))
    if roll < 0.7:
        pods = _selector(rng) or model.LabelSelector()
        return tiers.Peer(pods=tiers.NamespacedPods(_ns_selector(rng), pods))
    if roll < 0.85:
        return tiers.Peer(networks=(rng.choice(("10.0.0.0/29", "fd00::/124", "10.0.0.8/30")),))
    return tiers.Peer(nodes=model.LabelSelector((("role", rng.choice(("a", "b"))),)))


def _admin_port(rng: random.Random) -> tiers.Port:
    roll = rng.random()
    if roll < 0.25:
        return tiers.Port(protocol="", named=rng.choice(("http", "dns")))
    if roll < 0.5:
        return tiers.Port("UDP")
    first = rng.choice((53, 80, 81, 8080))
    return tiers.Port("TCP", first, first + rng.choice((0, 0, 100)))


def _admin_rules(rng: random.Random, actions: tuple[str, ...]) -> tuple[tiers.Rule, ...]:
    return tuple(
        tiers.Rule(
            f"r{j}",
            rng.choice(actions),
            tuple(_admin_peer(rng) for _ in range(rng.randint(1, 2))),
            tuple(_admin_port(rng) for _ in range(rng.choice((0, 1, 2)))),
        )
        for j in range(rng.randrange(3))
    )


def _admin_policy(rng: random.Random, name: str) -> tiers.ClusterPolicy:
    """One admin policy of either tier (rules of every action and peer kind)."""
    tier = rng.choice(tiers.TIERS)
    actions = tiers.ACTIONS if tier == tiers.ADMIN else (tiers.ACCEPT, tiers.DENY)
    subject = tiers.Subject(namespaces=_ns_selector(rng))
    kind = tiers.CLUSTER_NETWORK_POLICY
    ingress, egress = _admin_rules(rng, actions), _admin_rules(rng, actions)
    return tiers.ClusterPolicy(kind, name, tier, rng.randrange(3), subject, ingress, egress)


def _admin(rng: random.Random) -> tuple[tiers.ClusterPolicy, ...]:
    """A few admin policies of both tiers."""
    return tuple(_admin_policy(rng, f"c{i}") for i in range(rng.randrange(4)))


class World:
    """The snapshot as plain collections, mirrored into a Calculator step by step."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.calc = incremental.Calculator(NODE, incremental.Settings(guard_ports=GUARD))
        self.objects: dict[str, dict[str, Any]] = {
            k: {} for k in ("pods", "namespaces", "policies", "services", "slices", "nodes")
        }
        self.reported: dict[str, calc_desired.Desired] = {}
        self.admin: tuple[tiers.ClusterPolicy, ...] = ()

    def step(self) -> None:
        rng, roll = self.rng, self.rng.random()
        if roll < 0.45:
            key = f"{rng.choice(NAMESPACES)}/p{rng.randrange(10)}"
            self.put("pods", key, _pod(rng, key) if rng.random() < 0.85 else None)
        elif roll < 0.6:
            name = rng.choice(NAMESPACES)
            labels = {"team": rng.choice(("x", "y"))}
            if rng.random() < 0.2:
                labels[rng.choice(("podseg.io/mode", "podseg.io/node-guard"))] = rng.choice(
                    ("visibility", "off", "allow-metadata")
                )
            ns = model.Namespace(name, labels) if rng.random() < 0.9 else None
            self.put("namespaces", name, ns)
        elif roll < 0.78:
            name = f"q{rng.randrange(6)}"
            policy = _policy(rng, name) if rng.random() < 0.85 else None
            key = f"{policy.namespace}/{name}" if policy else f"{rng.choice(NAMESPACES)}/{name}"
            self.put("policies", key, policy)
        elif roll < 0.86:
            name = f"s{rng.randrange(2)}"
            self.put("services", f"a/{name}", _service(rng, name) if rng.random() < 0.8 else None)
        elif roll < 0.94:
            name = f"e{rng.randrange(3)}"
            self.put("slices", f"a/{name}", _slice(rng, name) if rng.random() < 0.8 else None)
        elif roll < 0.97:
            name = rng.choice((NODE, "n2"))
            addrs = rng.choice((("10.0.0.250",), ("10.0.0.7", "fd00::fa"), ()))
            self.put("nodes", name, model.Node(name, addrs, {"role": rng.choice(("a", "b"))}))
        else:
            self.admin = _admin(rng)
            self.calc.set_admin(self.admin)
            self.collect()

    def put(self, kind: str, key: str, value: Any) -> None:
        if value is None:
            self.objects[kind].pop(key, None)
        else:
            self.objects[kind][key] = value
        setter = {
            "pods": self.calc.set_pod,
            "namespaces": self.calc.set_namespace,
            "policies": self.calc.set_policy,
            "services": self.calc.set_service,
            "slices": self.calc.set_slice,
            "nodes": self.calc.set_node,
        }[kind]
        setter(key, value)
        self.collect()

    def whole(self) -> incremental.Calculator:
        """A calculator of the whole snapshot at once (`Calculator.of`), as at a start."""
        o = self.objects
        return incremental.Calculator.of(
            NODE,
            incremental.Settings(guard_ports=GUARD),
            pods=o["pods"],
            namespaces=o["namespaces"],
            policies=o["policies"],
            nodes=o["nodes"],
            services=o["services"],
            slices=o["slices"],
            admin=self.admin,
        )

    def collect(self) -> None:
        for changed, result in self.calc.flush().items():
            if result is None:
                self.reported.pop(changed, None)
            else:
                self.reported[changed] = result

    def check(self) -> None:
        o = self.objects
        cluster = calc_desired.Cluster.of(
            pods=o["pods"].values(),
            namespaces=o["namespaces"],
            policies=o["policies"].values(),
            nodes=o["nodes"].values(),
            services=o["services"].values(),
            endpointslices=o["slices"].values(),
            guard_ports=GUARD,
            admin=self.admin,
        )
        local = {k: p for k, p in o["pods"].items() if p.node_name == NODE and not p.host_network}
        assert set(self.calc.local) == set(local)
        for key, pod in local.items():
            expected = calc_desired.desired(pod, cluster)
            assert self.calc.desired(key) == expected, key
            lockdown = self.rng.random() < 0.3
            in_link = calc_desired.desired(pod, cluster, LINK, lockdown=lockdown)
            assert self.calc.desired_in(key, LINK, lockdown=lockdown) == in_link, key
        assert self.reported == {k: self.calc.desired(k) for k in local}


@pytest.mark.parametrize("seed", range(8))
def test_every_step_of_a_random_walk_equals_a_from_scratch_compile(seed: int) -> None:
    world = World(random.Random(seed))
    for _ in range(250):
        world.step()
        world.check()


@pytest.mark.parametrize("seed", range(3))
def test_a_calculator_built_from_a_whole_snapshot_equals_one_fed_change_by_change(
    seed: int,
) -> None:
    world = World(random.Random(100 + seed))
    for step in range(150):
        world.step()
        if step % 30 != 29:
            continue
        whole = world.whole()
        assert set(whole.local) == set(world.calc.local)
        for key in whole.local:
            assert whole.desired(key) == world.calc.desired(key)
    world.check()


def _broad(n: int) -> World:
    """A local pod allowing ingress from every pod of team-x namespaces, and n remote pods
    with scattered and neighbouring addresses, all members."""
    world = World(random.Random(0))
    world.put("namespaces", "a", model.Namespace("a", {"team": "x"}))
    world.put("namespaces", "b", model.Namespace("b", {"team": "x"}))
    peer = model.Peer(namespace_selector=model.LabelSelector((("team", "x"),)))
    rule = model.PolicyRule(peers=(peer,), ports=(model.PolicyPort("TCP", 80),))
    policy = model.NetworkPolicy("a", "allow", model.LabelSelector(), ingress=(rule,))
    world.put("policies", "a/allow", policy)
    world.put("pods", "a/local", model.Pod("a", "local", node_name=NODE, ips=("10.9.0.1",)))
    for i in range(n):
        ip = f"10.1.{i // 100}.{(i % 100) * 2 + 1}"  # scattered: every other address
        pod = model.Pod("b", f"r{i}", labels={"app": "web"}, node_name="n2", ips=(ip,))
        world.put("pods", f"b/r{i}", pod)
    return world


def _count_canonicalisations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the peer pieces each `canonical_peer_ports` call gets from now on."""
    sizes: list[int] = []
    real = intervals.canonical_peer_ports

    def counting(triples: Any, exclude: Any = ()) -> Any:
        triples = list(triples)
        sizes.append(len(triples))
        return real(triples, exclude)

    monkeypatch.setattr(intervals, "canonical_peer_ports", counting)
    return sizes


def test_a_remote_flip_binds_nothing_again_and_canonicalises_only_its_neighbourhood(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = _broad(600)
    before = world.calc.desired("a/local").ruleset.ingress.port_peers
    assert len(before) == 601  # every remote pod, plus the local pod itself
    sizes = _count_canonicalisations(monkeypatch)

    def no_bind(*_: Any) -> Any:
        raise AssertionError("a remote flip must not bind a local pod again")

    monkeypatch.setattr(terms, "bind", no_bind)
    flipped = model.Pod("b", "r300", labels={"app": "web"}, node_name="n2", ips=("10.1.3.1",))
    world.put("namespaces", "b", model.Namespace("b", {"team": "x"}))  # no change at all
    world.put("pods", "b/r300", flipped)  # same pod, same addresses: no element moves
    world.put("pods", "b/r300", None)
    after = world.calc.desired("a/local").ruleset.ingress.port_peers
    assert len(after) == 600 and set(before) - set(after) == {
        e for e in before if e.addrs.first == e.addrs.last == 0x0A010301
    }
    assert sizes and max(sizes) <= 3
    world.check()


def test_a_namespace_relabel_retests_its_pods_only_where_a_selector_changed_its_verdict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A relabel of a namespace of 300 peer pods that no namespace selector notices tests
    none of them again; one that takes the namespace out of the team moves every one."""
    world = _broad(300)
    assert len(world.calc.desired("a/local").ruleset.ingress.port_peers) == 301
    tested: list[str] = []
    real = membership.Memberships.holds

    def counting(self: membership.Memberships, source: Any, peer: Any) -> bool:
        tested.append(peer.pod.key)
        return real(self, source, peer)

    monkeypatch.setattr(membership.Memberships, "holds", counting)
    world.put("namespaces", "b", model.Namespace("b", {"team": "x", "owner": "ops"}))
    assert tested == []
    assert len(world.calc.desired("a/local").ruleset.ingress.port_peers) == 301
    world.put("namespaces", "b", model.Namespace("b", {"team": "y"}))
    assert len(tested) == 300
    assert len(world.calc.desired("a/local").ruleset.ingress.port_peers) == 1
    world.check()


def test_local_pods_of_the_same_peers_share_one_fresh_build_until_a_membership_moves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = _broad(300)
    replicas = ["a/local", *(f"a/local{i}" for i in range(4))]
    for i, key in enumerate(replicas[1:]):
        pod = model.Pod("a", f"local{i}", node_name=NODE, ips=(f"10.9.0.{i + 2}",))
        world.put("pods", key, pod)
    sizes = _count_canonicalisations(monkeypatch)
    o = world.objects
    whole = world.whole()
    results = {key: whole.desired(key) for key in replicas}
    # 5 local pods bound to the same peers: the 300-peer set is canonicalised once for all
    # of them (their union and their policy's own elements share one recipe), and they hold
    # the same tuple
    assert sum(1 for n in sizes if n >= 300) == 1
    assert len({id(r.ruleset.ingress.port_peers) for r in results.values()}) == 1
    assert results == {key: world.calc.desired(key) for key in replicas}
    # a remote pod leaves the peers; a policy edit then builds every local pod afresh, and
    # that build must not reuse the result from before the pod left
    for calc in (whole, world.calc):
        calc.set_pod("b/r7", None)
        calc.set_policy("a/allow", None)
        calc.set_policy("a/allow", o["policies"]["a/allow"])
    world.objects["pods"].pop("b/r7")
    world.collect()
    gone = 0x0A01000F  # 10.1.0.15, r7's address
    for key in replicas:
        assert whole.desired(key) == world.calc.desired(key)
        assert all(e.addrs.first != gone for e in whole.desired(key).ruleset.ingress.port_peers)
    world.check()


def test_pods_holding_the_same_tuples_settle_a_peer_change_once_and_share_the_new_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def calculator(replicas: int) -> tuple[incremental.Calculator, World, list[str]]:
        world = _broad(300)
        keys = ["a/local", *(f"a/local{i}" for i in range(replicas - 1))]
        for i, key in enumerate(keys[1:]):
            pod = model.Pod("a", f"local{i}", node_name=NODE, ips=(f"10.9.0.{i + 2}",))
            world.put("pods", key, pod)
        calc = world.whole()
        assert len({id(calc.desired(key).ruleset.ingress.port_peers) for key in keys}) == 1
        return calc, world, keys

    one, _, _ = calculator(1)
    five, world, keys = calculator(5)
    sizes = _count_canonicalisations(monkeypatch)
    one.set_pod("b/r7", None)  # a peer pod leaves
    one.desired("a/local")
    alone = len(sizes)
    sizes.clear()
    five.set_pod("b/r7", None)
    results = {key: five.desired(key) for key in keys}
    # the five pods patch their shared tuples once, as one pod alone does, and share the result
    assert alone and len(sizes) == alone
    assert len({id(r.ruleset.ingress.port_peers) for r in results.values()}) == 1
    world.put("pods", "b/r7", None)
    assert results == {key: world.calc.desired(key) for key in keys}
    world.check()


def _subject(rng: random.Random) -> tiers.Subject:
    if rng.random() < 0.5:
        return tiers.Subject(namespaces=_ns_selector(rng))
    pods = _selector(rng) or model.LabelSelector()
    return tiers.Subject(pods=tiers.NamespacedPods(_ns_selector(rng), pods))


def _edited_rule(rng: random.Random, rule: tiers.Rule, actions: tuple[str, ...]) -> tiers.Rule:
    roll = rng.random()
    if roll < 0.35:  # the ports (the benchmark's edit)
        ports = tuple(_admin_port(rng) for _ in range(rng.choice((0, 1, 2))))
        return dataclasses.replace(rule, ports=ports)
    if roll < 0.65:  # the peers, now and then one of an unknown kind (fail closed)
        peers = [_admin_peer(rng) for _ in range(rng.randint(1, 2))]
        if rng.random() < 0.1:
            peers.append(tiers.Peer(unknown=True))
        return dataclasses.replace(rule, peers=tuple(peers))
    return dataclasses.replace(rule, action=rng.choice(actions))


class AdminWorld(World):
    """The walk with admin policies edited one at a time (priority changes, rule reorders,
    rule edits, subject changes, additions, deletions) and pods relabelled in place, between
    the other changes."""

    def step(self) -> None:
        rng, roll = self.rng, self.rng.random()
        if roll < 0.45:
            self.admin_edit()
        elif roll < 0.6 and self.objects["pods"]:
            key = rng.choice(sorted(self.objects["pods"]))
            pod = self.objects["pods"][key]
            labels = {k: rng.choice(v) for k, v in LABELS.items() if rng.random() < 0.7}
            self.put("pods", key, dataclasses.replace(pod, labels=labels))
        else:
            super().step()

    def admin_edit(self) -> None:
        rng = self.rng
        policies = {p.name: p for p in self.admin}
        name = f"c{rng.randrange(5)}"
        old = policies.get(name)
        roll = rng.random()
        if old is None or roll < 0.1:
            policies[name] = _admin_policy(rng, name)
        elif roll < 0.2:
            del policies[name]
        else:
            actions = tiers.ACTIONS if old.tier == tiers.ADMIN else (tiers.ACCEPT, tiers.DENY)
            direction = rng.choice(("ingress", "egress"))
            rules = list(getattr(old, direction))
            if roll < 0.4:
                new = dataclasses.replace(old, priority=rng.randrange(4))
            elif roll < 0.55:
                rng.shuffle(rules)
                new = dataclasses.replace(old, **{direction: tuple(rules)})
            elif roll < 0.65:
                new = dataclasses.replace(old, subject=_subject(rng))
            elif roll < 0.7:
                peers = (_admin_peer(rng),)
                ports = tuple(_admin_port(rng) for _ in range(rng.choice((0, 1))))
                rules.append(tiers.Rule(f"r{len(rules)}", rng.choice(actions), peers, ports))
                new = dataclasses.replace(old, **{direction: tuple(rules)})
            elif rules:
                i = rng.randrange(len(rules))
                rules[i] = _edited_rule(rng, rules[i], actions)
                new = dataclasses.replace(old, **{direction: tuple(rules)})
            else:
                new = dataclasses.replace(old, **{direction: _admin_rules(rng, actions)})
            policies[name] = new
        self.admin = tuple(policies.values())
        self.calc.set_admin(self.admin)
        self.collect()


@pytest.mark.parametrize("seed", range(6))
def test_every_step_of_a_walk_of_admin_edits_equals_a_from_scratch_compile(seed: int) -> None:
    world = AdminWorld(random.Random(1000 + seed))
    for _ in range(300):
        world.step()
        world.check()


def _two_teams() -> tuple[World, list[tiers.ClusterPolicy]]:
    """Local pods in namespaces a (team x) and b (team y), remote pods in c (team x), and an
    Admin policy per team whose subject is that team, denying port 22 from team x."""
    world = World(random.Random(0))
    for name, team in (("a", "x"), ("b", "y"), ("c", "x")):
        world.put("namespaces", name, model.Namespace(name, {"team": team}))
    for i in range(6):
        namespace, node = ("a", NODE) if i < 2 else ("b", NODE) if i < 4 else ("c", "n2")
        pod = model.Pod(namespace, f"p{i}", node_name=node, ips=(V4[i],))
        world.put("pods", pod.key, pod)
    policies = [
        tiers.ClusterPolicy(
            tiers.CLUSTER_NETWORK_POLICY,
            f"for-{team}",
            tiers.ADMIN,
            1,
            tiers.Subject(namespaces=model.LabelSelector((("team", team),))),
            ingress=(
                tiers.Rule(
                    f"deny-{team}",
                    tiers.DENY,
                    (tiers.Peer(namespaces=model.LabelSelector((("team", "x"),))),),
                    (tiers.Port("TCP", 22, 22),),
                ),
            ),
        )
        for team in ("x", "y")
    ]
    world.admin = tuple(policies)
    world.calc.set_admin(world.admin)
    world.collect()
    world.check()
    return world, policies


def test_an_admin_edit_recomputes_only_its_own_rules_for_the_pods_it_selects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world, (for_x, for_y) = _two_teams()
    computed: list[str] = []
    real = tiers_compile.rule_region_of

    def counting(rule: tiers.Rule, *args: Any) -> Any:
        computed.append(rule.name)
        return real(rule, *args)

    monkeypatch.setattr(tiers_compile, "rule_region_of", counting)
    rule = dataclasses.replace(for_y.ingress[0], ports=(tiers.Port("TCP", 23, 23),))
    world.admin = (for_x, dataclasses.replace(for_y, ingress=(rule,)))
    world.calc.set_admin(world.admin)
    assert world.calc.touched == {"b/p2", "b/p3"}  # the pods of team y only
    world.collect()
    assert computed == ["deny-y"]  # once, for both pods; for-x's region stays cached
    world.check()


def test_a_pod_change_touches_only_the_local_pods_whose_tier_peers_it_moves() -> None:
    world, _ = _two_teams()
    world.collect()
    moved = model.Pod("b", "p9", node_name="n2", ips=(V4[9],))  # team y: no rule peer
    world.calc.set_pod(moved.key, moved)
    world.objects["pods"][moved.key] = moved
    assert world.calc.touched == set()
    joined = model.Pod("c", "p9", node_name="n2", ips=(V4[10],))  # team x: every rule's peer
    world.calc.set_pod(joined.key, joined)
    world.objects["pods"][joined.key] = joined
    assert world.calc.touched == {"a/p0", "a/p1", "b/p2", "b/p3"}
    world.collect()
    world.check()
