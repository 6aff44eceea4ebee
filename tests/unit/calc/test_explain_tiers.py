"""`podseg explain` names the admin tier, policy and rule that decided, and its reasoning (the
reference evaluation) agrees with what the compiled ruleset makes the kernel do."""

from __future__ import annotations

from agent import model
from agent.calc import desired as calc_desired
from agent.calc import explain
from agent.k8s import convert as k8s_convert
from agent.tiers import convert
from agent.tiers import model as tiers

NAMESPACES = {n: model.Namespace(n) for n in ("shop", "ops")}
WEB = model.Pod("shop", "web", labels={"app": "web"}, node_name="n1", ips=("198.18.1.2",))
API = model.Pod("shop", "api", labels={"app": "api"}, node_name="n1", ips=("198.18.1.3",))
MON = model.Pod("ops", "prom", labels={"app": "prom"}, node_name="n1", ips=("198.18.2.2",))


def cnp(
    name: str, tier: str, priority: int, ingress: list[dict[str, object]]
) -> tiers.ClusterPolicy:
    spec = {"tier": tier, "priority": priority, "subject": {"namespaces": {}}, "ingress": ingress}
    return convert.cluster_network_policy({"metadata": {"name": name}, "spec": spec})


ADMIN = [
    cnp(
        "no-ssh",
        "Admin",
        10,
        [
            {
                "name": "ssh",
                "action": "Deny",
                "from": [{"namespaces": {}}],
                "protocols": [{"tcp": {"destinationPort": {"number": 22}}}],
            }
        ],
    ),
    cnp(
        "monitoring",
        "Admin",
        20,
        [
            {
                "name": "prom",
                "action": "Accept",
                "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}],
            }
        ],
    ),
    cnp(
        "default-deny",
        "Baseline",
        100,
        [{"name": "all", "action": "Deny", "from": [{"namespaces": {}}]}],
    ),
]
TEAM = k8s_convert.network_policy(
    {
        "metadata": {"namespace": "shop", "name": "api-from-web"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "api"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
        },
    }
)
CLUSTER = calc_desired.Cluster.of(
    pods=[WEB, API, MON], namespaces=NAMESPACES, policies=[TEAM], admin=ADMIN
)  # type: ignore[arg-type]


def side(source: model.Pod, destination: model.Pod, port: int) -> explain.Side:
    result = explain.explain(
        explain.Endpoint(source.ips[0], source),
        explain.Endpoint(destination.ips[0], destination),
        "TCP",
        port,
        CLUSTER,
    )
    ingress = next(s for s in result.sides if s.direction == "ingress")
    assert ingress.agrees, ingress
    return ingress


def test_admin_deny_overrides_the_team_allow() -> None:
    ingress = side(WEB, API, 22)
    assert ingress.verdict == explain.DENIED
    assert ingress.reasons == ("Admin tier: ClusterNetworkPolicy/no-ssh rule ssh denies",)


def test_admin_accept_and_networkpolicy_and_baseline() -> None:
    assert side(MON, API, 8080).verdict == explain.ALLOWED  # Admin Accept beats the isolation
    assert side(WEB, API, 8080).verdict == explain.ALLOWED  # the team's policy
    web = side(API, WEB, 8080)  # web is isolated by no NetworkPolicy: the Baseline decides
    assert web.verdict == explain.DENIED
    assert web.reasons == ("Baseline tier: ClusterNetworkPolicy/default-deny rule all denies",)
