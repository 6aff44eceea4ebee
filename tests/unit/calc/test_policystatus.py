"""Policy status: selected pods cluster-wide, their nodes, and where the current version is
programmed; and a node's own report of what it has programmed."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

from agent import model, store
from agent.calc import policystatus
from agent.commands import policies as policies_command
from agent.sync import leader


def _pod(name: str, node: str, app: str, *, ns: str = "x", ip: str = "198.18.0.9") -> model.Pod:
    return model.Pod(ns, name, labels={"app": app}, node_name=node, ips=(ip,), phase="Running")


def _policy(name: str, app: str, rv: str = "7", *, ns: str = "x") -> model.NetworkPolicy:
    selector = model.LabelSelector(match_labels=(("app", app),))
    return model.NetworkPolicy(ns, name, pod_selector=selector, resource_version=rv)


PODS = [
    _pod("a", "n1", "web"),
    _pod("b", "n2", "web"),
    _pod("c", "n2", "db"),
    _pod("other-ns", "n3", "web", ns="y"),
    model.Pod(
        "x", "host", labels={"app": "web"}, node_name="n3", ips=("1.2.3.4",), host_network=True
    ),
    model.Pod("x", "pending", labels={"app": "web"}, node_name="n3"),  # no address yet
]


def test_counts_pods_and_nodes_and_compares_versions() -> None:
    web, db, nobody = _policy("web", "web"), _policy("db", "db", "3"), _policy("nobody", "gone")
    reports = {"n1": {"x/web": "7"}, "n2": {"x/web": "6", "x/db": "3"}}
    got = {s.name: s for s in policystatus.compute([web, db, nobody], PODS, {}, reports)}
    assert got["web"].selected_pods == 2 and got["web"].nodes == ("n1", "n2")
    assert got["web"].realized == ("n1",) and got["web"].missing == ("n2",)  # n2 has v6
    assert got["db"].fully_realized and got["db"].nodes == ("n2",)
    assert got["nobody"].selected_pods == 0 and got["nobody"].fully_realized


def test_a_node_realizes_a_policy_only_when_every_local_pod_it_selects_holds_it() -> None:
    local = [p for p in PODS if p.node_name == "n2"]
    web, db = _policy("web", "web"), _policy("db", "db", "3")
    report = policystatus.realized_on_node([web, db], local, {"x/b": ("x/web",), "x/c": None})
    assert report == {"x/web": "7"}  # c is not enforced right now: db is not realized


def test_node_reports_parse_and_refuse_garbage() -> None:
    good = {
        "metadata": {"annotations": {leader.REALIZED_ANNOTATION: '{"x/web": "7", "bad": 3}'}},
        "spec": {"holderIdentity": "n1"},
    }
    assert leader.parse_report(good) == ("n1", {"x/web": "7"})
    garbled = {"metadata": {"annotations": {leader.REALIZED_ANNOTATION: "{"}}, "spec": {}}
    assert leader.parse_report(garbled) is None
    assert leader.parse_report({"metadata": "x"}) is None


def test_event_names_are_fixed_per_policy_reason_and_version() -> None:
    one = leader.event_name("x/web", "NoPodsSelected", "7")
    assert one == leader.event_name("x/web", "NoPodsSelected", "7")
    assert one != leader.event_name("x/web", "NoPodsSelected", "8")
    assert one != leader.event_name("x/web", "InvalidPolicy", "7")
    assert one.startswith("web.podseg-nopodsselected-") and len(one) <= 253


def test_cli_table_and_json() -> None:
    cluster = store.Store()
    cluster.policies = {"x/web": _policy("web", "web"), "x/nobody": _policy("nobody", "gone")}
    cluster.pods = {p.key: p for p in PODS}
    out = io.StringIO()
    code = policies_command.main(
        SimpleNamespace(output="text"), cluster, {"n1": {"x/web": "7"}}, out
    )  # type: ignore[arg-type]
    lines = out.getvalue().splitlines()
    assert code == 1 and lines[0].split()[:5] == ["NAMESPACE", "NAME", "PODS", "NODES", "REALIZED"]
    assert any("web" in line and "1/2" in line and "not realized on n2" in line for line in lines)
    assert any("nobody" in line and "selects no pod" in line for line in lines)
    out = io.StringIO()
    reports = {"n1": {"x/web": "7"}, "n2": {"x/web": "7"}}
    code = policies_command.main(SimpleNamespace(output="json"), cluster, reports, out)  # type: ignore[arg-type]
    rows = {r["name"]: r for r in json.loads(out.getvalue())}
    assert code == 0 and rows["web"]["realized"] and rows["web"]["realizedNodes"] == ["n1", "n2"]
