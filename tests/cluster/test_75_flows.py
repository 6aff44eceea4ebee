"""Visibility before enforcement on the real cluster: a namespace in visibility mode, its
traffic gathered from the agents through the API server's proxy (`podseg flows`), drawn
(`podseg map`), turned into NetworkPolicies (`podseg recommend`) that, applied and enforced,
keep every observed connection working while a new one is dropped, and a `podseg whatif` run
that flags a candidate policy which would break an observed flow."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import yaml

from tests.cluster import support
from tests.cluster.support import expect


def _podseg(kube: support.Kube, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args, "--kubeconfig", kube.config.kubeconfig],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _observed(graph: dict[str, Any], namespace: str) -> set[tuple[str, str, int]]:
    return {
        (f["src"].get("workload", ""), f["dst"].get("workload", ""), f["port"])
        for f in graph["flows"]
        if f["verdict"] == "allowed"
        and f["src"].get("namespace") == namespace
        and f["dst"].get("namespace") == namespace
    }


def test_flows_map_recommend_enforce_and_whatif(
    kube: support.Kube, podseg: Any, namespace: Any, tmp_path: pathlib.Path
) -> None:
    lab = namespace("lab", {"podseg.io/mode": "visibility"})
    ips = support.run_pods(
        kube, lab, {"front": {"app": "front"}, "back": {"app": "back"}, "jump": {"app": "jump"}}
    )
    flows = tmp_path / "flows.json"

    def gathered() -> bool:
        expect(kube, lab, "front", ips["back"], 80, allowed=True)
        done = _podseg(kube, "flows", "-n", lab, "-o", "json")
        assert done.returncode == 0, done.stderr
        flows.write_text(done.stdout)
        return ("front", "back", 80) in _observed(json.loads(done.stdout), lab)

    support.wait_until(gathered, timeout=90, what="front -> back:80 gathered from the agents")

    picture = tmp_path / "map.html"
    drawn = _podseg(kube, "map", "-n", lab, "--flows", str(flows), "-o", str(picture))
    assert drawn.returncode == 0, drawn.stderr
    page = picture.read_text()
    assert f'data-src="{lab}/front" data-dst="{lab}/back" data-verdict="allowed"' in page

    recommended = _podseg(kube, "recommend", "-n", lab, "--flows", str(flows))
    assert recommended.returncode == 0, recommended.stderr
    policies = [d for d in yaml.safe_load_all(recommended.stdout) if d]
    assert {p["kind"] for p in policies} == {"NetworkPolicy"}
    kube.run("-n", lab, "apply", "-f", "-", input=recommended.stdout)
    kube.run("label", "namespace", lab, "podseg.io/mode-")
    expect(kube, lab, "jump", ips["back"], 80, allowed=False)  # a new peer
    expect(kube, lab, "front", ips["back"], 81, allowed=False)  # a new port
    expect(kube, lab, "front", ips["back"], 80, allowed=True)  # what was seen still works

    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"namespace": lab, "name": "back-observed"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "back"}},
                    "policyTypes": ["Ingress"],
                },
            }
        )
    )
    whatif = _podseg(kube, "whatif", str(candidate), "--flows", str(flows))
    assert whatif.returncode == 1, whatif.stdout + whatif.stderr
    assert f"{lab}/front" in whatif.stdout and f"{lab}/back" in whatif.stdout
