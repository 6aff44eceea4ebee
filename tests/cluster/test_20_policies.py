"""NetworkPolicy on the real cluster: agnhost pods started by the kubelet on the CNI bridge,
probed from inside each other with `agnhost connect`; Services through the real kube-proxy
(nftables mode)."""

from __future__ import annotations

from typing import Any

from tests.cluster import support
from tests.cluster.support import expect


def test_default_deny_then_allow_by_labels_and_namespaces_and_relabel(
    kube: support.Kube, podseg: Any, namespace: Any
) -> None:
    shop = namespace("shop")
    ops = namespace("ops", {"team": "ops"})
    other = namespace("other")
    ips = support.run_pods(
        kube, shop, {"web": {"app": "web"}, "api": {"app": "api"}, "db": {"app": "db"}}
    )
    mon = support.run_pods(kube, ops, {"mon": {"app": "mon"}})["mon"]
    support.run_pods(kube, other, {"x": {"app": "web"}})
    # no policy: everyone reaches everyone
    expect(kube, shop, "web", ips["db"], 80, allowed=True)
    expect(kube, other, "x", ips["api"], 80, allowed=True)

    # default deny ingress in shop
    kube.apply(
        support.policy("deny", {"podSelector": {}, "policyTypes": ["Ingress"]}), namespace=shop
    )
    expect(kube, shop, "web", ips["api"], 80, allowed=False)
    expect(kube, ops, "mon", ips["db"], 80, allowed=False)
    # egress is not isolated: shop pods still reach out
    expect(kube, shop, "api", mon, 80, allowed=True)

    # allow web -> api on TCP 80 (pod labels), mon -> db (namespace labels)
    kube.apply(
        support.web_to_api_policy(),
        support.policy(
            "ops-to-db",
            {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}}}]}],
            },
        ),
        namespace=shop,
    )
    expect(kube, shop, "web", ips["api"], 80, allowed=True)
    expect(kube, shop, "web", ips["api"], 81, allowed=False, protocol="udp")  # port 80/TCP only
    expect(kube, shop, "db", ips["api"], 80, allowed=False)
    expect(kube, other, "x", ips["api"], 80, allowed=False)  # app=web, but another namespace
    expect(kube, ops, "mon", ips["db"], 80, allowed=True)
    expect(kube, shop, "web", ips["db"], 80, allowed=False)

    # relabel: db becomes a "web" pod -> reaches api; back -> denied again
    kube.run("-n", shop, "label", "pod", "db", "app=web", "--overwrite")
    expect(kube, shop, "db", ips["api"], 80, allowed=True)
    kube.run("-n", shop, "label", "pod", "db", "app=db", "--overwrite")
    expect(kube, shop, "db", ips["api"], 80, allowed=False)
    # a namespace relabel: ops loses team=ops -> mon denied; other gains it -> x allowed
    kube.run("label", "namespace", ops, "team-")
    kube.run("label", "namespace", other, "team=ops")
    expect(kube, ops, "mon", ips["db"], 80, allowed=False)
    expect(kube, other, "x", ips["db"], 80, allowed=True)

    # deleting the policies stops enforcing them
    kube.run("-n", shop, "delete", "networkpolicy", "--all")
    expect(kube, shop, "web", ips["db"], 80, allowed=True)


def test_egress_through_a_cluster_ip_of_the_real_kube_proxy(
    kube: support.Kube, podseg: Any, namespace: Any
) -> None:
    """The client sends to a ClusterIP; kube-proxy (nftables, in the node) picks a backend
    later. An egress policy naming backend pods opens the Service; an ipBlock that covers the
    ClusterIP but excepts its backend does not (the proxy's translation is what counts)."""
    ns = namespace("svc")
    ips = support.run_pods(
        kube, ns, {"client": {"app": "client"}, "db": {"app": "db"}, "web": {"app": "web"}}
    )
    kube.apply(
        support.service("db", {"app": "db"}, 5432, "http"),
        support.service("web", {"app": "web"}, 8080, 80),
        namespace=ns,
    )
    db_vip = kube.json("-n", ns, "get", "service", "db")["spec"]["clusterIP"]
    web_vip = kube.json("-n", ns, "get", "service", "web")["spec"]["clusterIP"]
    expect(kube, ns, "client", db_vip, 5432, allowed=True)
    expect(kube, ns, "client", web_vip, 8080, allowed=True)

    kube.apply(
        support.policy(
            "client-to-db",
            {
                "podSelector": {"matchLabels": {"app": "client"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                        "ports": [{"port": 80}],
                    }
                ],
            },
        ),
        namespace=ns,
    )
    expect(kube, ns, "client", db_vip, 5432, allowed=True)
    expect(kube, ns, "client", ips["db"], 80, allowed=True)
    expect(kube, ns, "client", web_vip, 8080, allowed=False)
    expect(kube, ns, "client", ips["web"], 80, allowed=False)

    # an ipBlock over everything but the db pod: the web Service opens (its backend is
    # allowed), the db Service stays closed although its ClusterIP lies in the CIDR
    kube.apply(
        support.policy(
            "client-to-db",
            {
                "podSelector": {"matchLabels": {"app": "client"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [f"{ips['db']}/32"]}}]}
                ],
            },
        ),
        namespace=ns,
    )
    expect(kube, ns, "client", web_vip, 8080, allowed=True)
    expect(kube, ns, "client", db_vip, 5432, allowed=False)
    expect(kube, ns, "client", ips["db"], 80, allowed=False)

    # the backend moves: a new db pod behind the Service is reached through the ClusterIP
    kube.run("-n", ns, "label", "pod", "web", "app=db", "--overwrite")  # web now also backs db
    expect(kube, ns, "client", db_vip, 5432, allowed=True)
