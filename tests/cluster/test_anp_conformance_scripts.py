"""The helpers of `scripts/cluster.sh conformance-anp`. Pure: no cluster, no root.

* anp-base-manifests.py derives the suite's base manifests for the one-node, SCTP-less test bed:
  checked on a sample with the upstream layout and, when the module is in the cluster's Go
  module cache, on the upstream file itself (rendered and parsed as YAML).
* anp-summary.py sorts the failed cases of a `go test -v` log by failing probe: checked on the
  output of a run of testify's Eventually as the suite's probe helper uses it.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DERIVE = ROOT / "scripts" / "cluster" / "anp-base-manifests.py"
SUMMARY = ROOT / "scripts" / "cluster" / "anp-summary.py"
UPSTREAM = pathlib.Path(
    "/var/cache/podseg-cluster/gomod/sigs.k8s.io/network-policy-api@v0.3.0/conformance/base/manifests.yaml"
)


def _server(name: str, script: str, env: str = "") -> str:
    return (
        f"        - name: {name}\n"
        "          image: registry.k8s.io/e2e-test-images/agnhost:2.45\n"
        f'          command: ["/bin/bash", "-c", "{script}"]\n' + env
    )


def _porter(name: str, port: str) -> str:
    env = f'          env:\n          - name: SERVE_SCTP_PORT_{port}\n            value: "foo"\n'
    return _server(name, "/agnhost porter", env)


def _statefulset(name: str, containers: str, host_network: bool = False) -> str:
    return (
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n"
        f"  name: {name}\n  namespace: ns-{name}\nspec:\n  replicas: 2\n  template:\n"
        "    spec:\n"
        + ("      hostNetwork: true\n" if host_network else "")
        + "      containers:\n"
        f"        - name: {name}-client\n"
        "          image: registry.k8s.io/e2e-test-images/agnhost:2.45\n" + containers
    )


def _sample() -> str:
    """The upstream layout: four StatefulSets with TCP, UDP and two SCTP servers, and the
    host-network centaur with two TCP servers, two UDP servers (with env) and two SCTP ones."""
    docs = ["apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-a\n"]
    for name in ("harry", "draco", "cedric", "luna"):
        web = (
            "          ports:\n            - containerPort: 80\n"
            "              protocol: TCP\n              name: web\n"
        )
        containers = _server(f"{name}-80", "/agnhost serve-hostname --tcp --port 80", web)
        containers += _porter(f"{name}-9003", "9003") + _porter(f"{name}-9005", "9005")
        docs.append(_statefulset(name, containers))
    centaur = ""
    for i in (0, 1):
        port = f"{{{{ index .HostNetworkPorts {i} }}}}"
        ports = (
            f"          ports:\n            - containerPort: {port}\n"
            f"              protocol: TCP\n              name: web-{port}\n"
        )
        centaur += _server(f"centaur-{port}-tcp", f"/agnhost serve-hostname --port {port}", ports)
    for i in (2, 4):
        port = f"{{{{ index .HostNetworkPorts {i} }}}}"
        ports_env = (
            f"          ports:\n            - containerPort: {port}\n"
            f"              protocol: UDP\n              name: dns-{port}\n"
            "          env:\n          - name: HOST_IP\n            valueFrom:\n"
            "              fieldRef:\n                fieldPath: status.hostIP\n"
        )
        centaur += _server(
            f"centaur-{port}-udp", f"/agnhost netexec --udp-port {port} $(HOST_IP)", ports_env
        )
    centaur += _porter("centaur-6", "6") + _porter("centaur-7", "7")
    docs.append(_statefulset("centaur", centaur, host_network=True))
    return "---\n".join(docs)


def _derive(tmp_path: pathlib.Path, text: str) -> subprocess.CompletedProcess[str]:
    src, out = tmp_path / "in.yaml", tmp_path / "out.yaml"
    src.write_text(text)
    return subprocess.run(
        [sys.executable, str(DERIVE), str(src), str(out)], capture_output=True, text=True
    )


def _render(text: str) -> list[dict[str, Any]]:
    """The derived file as the suite's template renders it (host ports 34345...)."""
    rendered = re.sub(
        r"\{\{ index \.HostNetworkPorts (\d) \}\}", lambda m: str(34345 + int(m[1])), text
    )
    return [d for d in yaml.safe_load_all(rendered) if d]


def _check_derived(docs: list[dict[str, Any]]) -> None:
    sets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "StatefulSet"}
    for name, sts in sets.items():
        spec = sts["spec"]["template"]["spec"]
        for c in spec["containers"]:
            assert "porter" not in " ".join(c.get("command", [])), (name, c["name"])
        if not spec.get("hostNetwork"):
            continue
        servers = [c for c in spec["containers"] if c.get("command")]
        assert len(servers) == 4
        for c in servers:
            assert "ports" not in c, c["name"]  # host ports: one node cannot give two replicas
            script = c["command"][2]
            assert script.startswith('if [ "$POD_NAME" = centaur-1 ]; then exec /agnhost ')
            assert script.endswith("; else exec /agnhost pause; fi")
            env = {e["name"]: e for e in c["env"]}
            assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert any("$(HOST_IP)" in c["command"][2] for c in servers)
        assert sts["spec"]["replicas"] == 2  # the suite waits for two ready replicas


def test_derive_sample(tmp_path: pathlib.Path) -> None:
    done = _derive(tmp_path, _sample())
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "out.yaml").read_text()
    _check_derived(_render(text))
    # the pod servers and their named ports stay as they were
    assert text.count("name: web\n") == 4
    assert text.count("serve-hostname --tcp --port 80") == 4


def test_derive_refuses_another_layout(tmp_path: pathlib.Path) -> None:
    sample = _sample().replace("/agnhost porter", "/agnhost porter --sctp", 1)
    sample = sample.replace('["/bin/bash", "-c", "/agnhost porter --sctp"]', '["/agnhost"]', 1)
    done = _derive(tmp_path, sample)
    assert done.returncode == 1
    assert "upstream layout changed" in done.stderr
    assert not (tmp_path / "out.yaml").exists()


@pytest.mark.skipif(not UPSTREAM.exists(), reason=f"{UPSTREAM} not downloaded")
def test_derive_upstream(tmp_path: pathlib.Path) -> None:
    done = _derive(tmp_path, UPSTREAM.read_text())
    assert done.returncode == 0, done.stderr
    docs = _render((tmp_path / "out.yaml").read_text())
    _check_derived(docs)
    upstream = _render(UPSTREAM.read_text())
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        (d["kind"], d["metadata"]["name"]) for d in upstream
    ]


LOG = """\
=== RUN   TestConformance
=== RUN   TestConformance/CNPAdminTierEgressTCP
=== RUN   TestConformance/CNPAdminTierEgressTCP/Should_support_an_allow
    helper.go:100: FAILED Command was [/agnhost connect --timeout=3s --protocol=tcp 10.0.0.1:80]
=== RUN   TestConformance/CNPAdminTierPortRange
=== RUN   TestConformance/CNPAdminTierPortRange/Should_support_egress
    helper.go:100: FAILED Command was [/agnhost connect --timeout=3s --protocol=sctp 10.0.0.1:9003]
    helper.go:70:
        \tError Trace:\thelper.go:70
        \tError:      \tCondition never satisfied
        \tTest:       \tTestConformance/CNPAdminTierPortRange/Should_support_egress
=== RUN   TestConformance/CNPAdminTierPortRange/Should_support_ingress
    helper.go:100: FAILED Command was [/agnhost connect --timeout=3s --protocol=sctp 10.0.0.2:9003]
    helper.go:70:
        \tError Trace:\thelper.go:70
        \tError:      \tCondition never satisfied
        \tTest:       \tTestConformance/CNPAdminTierPortRange/Should_support_ingress
=== RUN   TestConformance/CNPAdminTierGress
=== RUN   TestConformance/CNPAdminTierGress/Should_deny
    helper.go:100: FAILED Command was [/agnhost connect --timeout=3s --protocol=sctp 10.0.0.1:9003]
    helper.go:100: FAILED Command was [/agnhost connect --timeout=3s --protocol=udp 10.0.0.1:53]
    helper.go:70:
        \tError Trace:\thelper.go:70
        \tError:      \tCondition never satisfied
        \tTest:       \tTestConformance/CNPAdminTierGress/Should_deny
=== RUN   TestConformance/CNPAdminTierEgressNodePeers
    conformance_test.go:1: Skipping CNPAdminTierEgressNodePeers: suite does not support it
--- FAIL: TestConformance (12.00s)
    --- PASS: TestConformance/CNPAdminTierEgressTCP (1.00s)
        --- PASS: TestConformance/CNPAdminTierEgressTCP/Should_support_an_allow (1.00s)
    --- FAIL: TestConformance/CNPAdminTierPortRange (10.00s)
        --- FAIL: TestConformance/CNPAdminTierPortRange/Should_support_egress (5.00s)
        --- FAIL: TestConformance/CNPAdminTierPortRange/Should_support_ingress (5.00s)
    --- FAIL: TestConformance/CNPAdminTierGress (1.00s)
        --- FAIL: TestConformance/CNPAdminTierGress/Should_deny (1.00s)
    --- SKIP: TestConformance/CNPAdminTierEgressNodePeers (0.00s)
FAIL
"""


def _summary(tmp_path: pathlib.Path, log: str, *skipped: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "test.log"
    path.write_text(log)
    return subprocess.run(
        [sys.executable, str(SUMMARY), str(path), *skipped], capture_output=True, text=True
    )


def test_summary_sorts_failures_by_failing_probe(tmp_path: pathlib.Path) -> None:
    done = _summary(tmp_path, LOG, "CNPAdminTierIngressSCTP")
    assert done.returncode == 1, done.stdout  # Gress failed at a UDP probe
    lines = done.stdout.splitlines()
    assert lines[0] == (
        "passed: 1 of 5, failed on SCTP probes only: 1, failed otherwise: 1, "
        "skipped by feature: 1, skipped by name: 1"
    )
    assert "FAIL (SCTP probe, no SCTP in the kernel): CNPAdminTierPortRange" in lines
    assert "FAIL (unexpected; failing probes: udp): CNPAdminTierGress" in lines
    assert "SKIP (feature not in --features): CNPAdminTierEgressNodePeers" in lines
    assert "SKIP (by name, SCTP traffic: no SCTP in the kernel): CNPAdminTierIngressSCTP" in lines


def test_summary_passes_sctp_only_failures(tmp_path: pathlib.Path) -> None:
    log = LOG.replace("--protocol=udp", "--protocol=sctp")
    done = _summary(tmp_path, log)
    assert done.returncode == 0, done.stdout
    assert "failed on SCTP probes only: 2, failed otherwise: 0" in done.stdout


def test_summary_fails_when_no_case_ran(tmp_path: pathlib.Path) -> None:
    log = (
        "=== RUN   TestConformance\n    suite.go:1: error waiting\n"
        "--- FAIL: TestConformance (300.00s)\nFAIL\n"
    )
    done = _summary(tmp_path, log, "CNPAdminTierIngressSCTP")
    assert done.returncode == 1
    assert "no case ran" in done.stdout
