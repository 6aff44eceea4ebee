"""Uninstall on the real cluster, docs/operations.md's commands word for word (`deploy/...`
standing for the overlays): rules stay while no agent runs (fail closed), the cleanup DaemonSet
removes every podseg table and puts the node's CNI conflist back byte for byte, and
`kubectl delete -k` leaves nothing behind.

Runs after every test that needs podseg (file order; test_95_peers needs it uninstalled): the
later `cluster.sh conformance` installs podseg again.
"""

from __future__ import annotations

import pathlib
import shlex
from typing import Any

from tests.cluster import support
from tests.cluster.support import expect


def _documented_uninstall() -> list[list[str]]:
    text = (support.ROOT / "docs" / "operations.md").read_text()
    section = text.split("\n## Uninstall", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line.split("#", 1)[0]) for line in block.splitlines() if line.strip()]


def _local(words: list[str], overlays: dict[str, pathlib.Path]) -> list[str]:
    """A documented kubectl command for this cluster: the podseg kustomizations are the
    overlays (same objects, the image built here); deploy/monitoring/ is the repository's."""
    paths = {
        "deploy/": overlays["base"],
        "deploy/cleanup/": overlays["cleanup"],
        "deploy/responder/": overlays["responder"],
        "deploy/monitoring/": support.ROOT / "deploy" / "monitoring",
    }
    assert words[0] == "kubectl", words
    out = [str(paths.get(w, w)) for w in words[1:]]
    if "rollout" in out:
        out.append("--timeout=180s")
    return out


def test_the_documented_uninstall_leaves_no_table(
    kube: support.Kube, podseg: dict[str, pathlib.Path], namespace: Any
) -> None:
    commands = _documented_uninstall()
    assert commands[0][:5] == ["kubectl", "-n", "podseg-system", "delete", "daemonset"]
    ns = namespace("uninstall")
    kube.apply(
        support.policy("deny", {"podSelector": {}, "policyTypes": ["Ingress"]}), namespace=ns
    )
    ips = support.run_pods(kube, ns, {"a": {"app": "a"}, "b": {"app": "b"}})
    expect(kube, ns, "a", ips["b"], 80, allowed=False)
    # the monitoring objects exist when test_30 ran; make the documented delete meaningful
    support.ensure_monitoring(kube)

    # the node's conflist chains podseg-cni; install kept the original beside it
    conflist = support.NODE_CONFLIST
    original = support.node_file(kube.config, conflist + ".podseg-orig")
    assert original is not None and "podseg-cni" in (support.node_file(kube.config, conflist) or "")
    assert original == support.ORIGINAL_CONFLIST.get(conflist, original)

    # 1. the agent goes; its rules stay (fail closed)
    kube.run(*_local(commands[0], podseg))
    assert support.agent_pods(kube) == [], "step 1 returns once the agent pods are gone"
    expect(kube, ns, "a", ips["b"], 80, allowed=False)
    assert support.podseg_tables(support.tables_of(kube.config, ips["b"]))

    # 2. the cleanup DaemonSet removes the tables on every node
    report = ""
    for words in commands[1:4]:
        report = kube.run(*_local(words, podseg)).stdout
    assert '"event": "cleanup_summary"' in report or "cleanup" in report, report
    expect(kube, ns, "a", ips["b"], 80, allowed=True)
    # ... after putting the node's conflist back byte for byte and removing the plugin
    assert support.node_file(kube.config, conflist) == original
    assert support.node_file(kube.config, conflist + ".podseg-orig") is None
    assert support.in_node(kube.config, "test -e /opt/cni/bin/podseg-cni").returncode != 0

    # 3. everything else
    for words in commands[4:]:
        kube.run(*_local(words, podseg))
    support.wait_until(
        lambda: kube.run("get", "namespace", support.PODSEG_NS, check=False).returncode != 0,
        timeout=120,
        what="namespace podseg-system gone",
    )
    left = {
        name: support.podseg_tables(info["tables"])
        for name, info in support.pod_namespaces_tables(kube.config).items()
        if support.podseg_tables(info["tables"])
    }
    assert left == {}, f"podseg tables left in pod namespaces: {left}"
    for kind in ("clusterrole", "clusterrolebinding"):
        for name in ("podseg-agent", "podseg-responder"):
            assert kube.run("get", kind, name, check=False).returncode != 0, (kind, name)
