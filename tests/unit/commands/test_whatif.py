"""`podseg whatif` as a user runs it: the changed flows as a table or JSON, exit 1 when
traffic that passes now would be dropped, 0 otherwise, and one line with exit 2 for YAML
that is not a NetworkPolicy or names a namespace the graph does not know."""

from __future__ import annotations

import json
import pathlib

import pytest

from tests.support import flowgraphs as fg

FLOWS = str(fg.SHOP)
DENY_SHOP = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: shop}
spec: {podSelector: {}, policyTypes: [Ingress]}
"""
OPEN_CATALOG = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: catalog-ingress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: catalog}}
  ingress: [{}]
"""


def _file(tmp_path: pathlib.Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_breaking_candidates_exit_1(tmp_path: pathlib.Path) -> None:
    done = fg.podseg("whatif", _file(tmp_path, "deny.yaml", DENY_SHOP), "--flows", FLOWS)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["SOURCE", "DESTINATION", "PORT", "NOW", "AFTER", "SEEN"]
    assert any(
        line.split()[:5] == ["shop/frontend", "shop/cart", "TCP/8080", "allowed", "would-drop"]
        for line in lines
    )
    assert lines[-1].endswith("would be dropped (!)")


def test_replacing_a_policy_in_force_exit_0_and_json(tmp_path: pathlib.Path) -> None:
    path = _file(tmp_path, "open.yaml", OPEN_CATALOG)
    done = fg.podseg("whatif", path, "--flows", FLOWS, "-o", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["breaking"] == 0
    assert {
        (c["src"].get("workload") or c["src"].get("external"), c["now"], c["after"])
        for c in report["changes"]
    } == {("prometheus", "would-drop", "allowed"), ("198.51.100.0/24", "would-drop", "allowed")}


def test_multi_document_files(tmp_path: pathlib.Path) -> None:
    both = _file(tmp_path, "both.yaml", OPEN_CATALOG + "---\n" + DENY_SHOP)
    assert fg.podseg("whatif", both, "--flows", FLOWS).returncode == 1


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", "a v1 ConfigMap, not a"),
        ("- just\n- a list\n", "not a Kubernetes object"),
        ("kind: NetworkPolicy\n  bad: [indent\n", "not YAML"),
        (DENY_SHOP.replace("namespace: shop", "namespace: nope"), "no namespace 'nope'"),
        ("", "no NetworkPolicy in"),
    ],
)
def test_bad_policy_files(text: str, says: str, tmp_path: pathlib.Path) -> None:
    done = fg.podseg("whatif", _file(tmp_path, "p.yaml", text), "--flows", FLOWS)
    assert says in fg.one_line_error(done, "whatif")


def test_invalid_parts_of_a_candidate_are_noted(tmp_path: pathlib.Path) -> None:
    bad_port = OPEN_CATALOG.replace("ingress: [{}]", "ingress: [{ports: [{port: 'no such!'}]}]")
    done = fg.podseg("whatif", _file(tmp_path, "bad.yaml", bad_port), "--flows", FLOWS)
    assert "# note: NetworkPolicy shop/catalog-ingress: " in done.stderr
    assert done.returncode == 1  # the invalid port matches nothing: frontend's gRPC is cut
