"""podseg installed on a real cluster exactly as README says, from an overlay that only swaps
the image; the agent runs under its ServiceAccount and the shipped RBAC, and finds the pod
namespaces the CNI plugin made, through the runtime's netns folder and /proc."""

from __future__ import annotations

import pathlib
import re
from typing import Any

import yaml

from tests.cluster import support
from tests.support import kustomize

AGENT_SA = "system:serviceaccount:podseg-system:podseg-agent"


def _readme_install() -> list[str]:
    text = (support.ROOT / "README.md").read_text()
    section = text.split("## Install on a cluster", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_install_is_what_these_tests_run() -> None:
    """README's commands, word for word, with `deploy/` standing for the overlay."""
    readme = _readme_install()
    ours = support.install_commands({"base": pathlib.Path("deploy/")})
    assert [" ".join(["kubectl", *c]).replace("-k deploy", "-k deploy/") for c in ours] == readme[
        :2
    ]
    assert readme[2] == "kubectl apply -k deploy/monitoring/"  # test_30_monitoring.py runs it


def _real_render(kube: support.Kube, path: pathlib.Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(kube.run("kustomize", str(path)).stdout) if d]


def _by_identity(objects: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {kustomize.identity(o): o for o in objects}


def test_kubectl_kustomize_renders_what_the_tests_renderer_does(kube: support.Kube) -> None:
    """The real kustomize (kubectl 1.36) and tests/support/kustomize.py agree on every podseg
    kustomization (components and the image Component included)."""
    for name, path in {
        **support.KUSTOMIZATIONS,
        "monitoring": support.ROOT / "deploy/monitoring",
    }.items():
        real = _by_identity(_real_render(kube, path))
        ours = _by_identity(kustomize.render(path))
        assert real == ours, name


def test_the_overlay_only_swaps_the_image(
    kube: support.Kube, overlays: dict[str, pathlib.Path], image: str
) -> None:
    for name, source in support.KUSTOMIZATIONS.items():
        upstream = _real_render(kube, source)
        swapped = _real_render(kube, overlays[name])
        text = yaml.safe_dump_all(upstream)
        images = set(re.findall(rf"{support.UPSTREAM_IMAGE}:\S+", text))
        assert len(images) == 1, images
        assert yaml.safe_dump_all(swapped) == text.replace(images.pop(), image), name


def test_the_agent_rolls_out_under_its_service_account(kube: support.Kube, podseg: Any) -> None:
    (pod,) = support.agent_pods(kube)
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "podseg-agent"
    assert spec["hostNetwork"] and spec["hostPID"]
    assert spec["containers"][0]["image"].startswith("localhost/podseg/podseg:")
    log = kube.logs(support.PODSEG_NS, "daemonset/podseg-agent")
    assert '"event": "agent_ready"' in log
    assert support.rbac_denials(log) == []
    # The shipped role grants what the agent reads, and nothing it does not need.
    for verb, resource in [
        ("list", "pods"), ("watch", "pods"), ("list", "namespaces"), ("watch", "nodes"),
        ("list", "services"), ("list", "networkpolicies.networking.k8s.io"),
        ("watch", "endpointslices.discovery.k8s.io"), ("create", "events"),
    ]:  # fmt: skip
        assert _can(kube, verb, resource), (verb, resource)
    for verb, resource in [
        ("patch", "pods"),
        ("get", "secrets"),
        ("delete", "networkpolicies.networking.k8s.io"),
    ]:
        assert not _can(kube, verb, resource), (verb, resource)


def _can(kube: support.Kube, verb: str, resource: str) -> bool:
    result = kube.run("auth", "can-i", verb, resource, "-A", f"--as={AGENT_SA}", check=False)
    return result.stdout.strip() == "yes"


def test_pods_are_enforced_in_the_namespaces_the_cni_made(
    kube: support.Kube, podseg: Any, namespace: Any
) -> None:
    """Pods the kubelet started after the agent: the agent sees their namespaces bind-mounted
    by containerd under /var/run/netns (HostToContainer propagation) and as /proc/<pid>/ns/net
    (hostPID), finds each by its IP and programs its table."""
    ns = namespace("install")
    kube.apply(
        support.policy("deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]}),
        namespace=ns,
    )
    ips = support.run_pods(kube, ns, {"a": {"app": "a"}, "b": {"app": "b"}})
    for ip in ips.values():
        support.wait_until(
            lambda ip=ip: "inet podseg" in " ".join(support.tables_of(kube.config, ip)),
            timeout=30,
            what=f"table inet podseg in the namespace of {ip}",
        )
    (agent,) = support.agent_pods(kube)
    name = agent["metadata"]["name"]
    listing = kube.run(
        "-n", support.PODSEG_NS, "exec", name, "--", "ls", "/var/run/netns"
    ).stdout.split()
    on_node = set(support.pod_namespaces_tables(kube.config))
    assert on_node and on_node <= set(listing), (on_node, listing)
    procs = kube.run(
        "-n", support.PODSEG_NS, "exec", name, "--", "sh", "-c",
        "for p in /proc/[0-9]*; do readlink $p/ns/net; done | sort -u | wc -l",
    ).stdout  # fmt: skip
    assert int(procs) >= len(on_node) + 1, "pod namespaces (and the node's) visible under /proc"
    text = support.agent_metrics(kube)
    enforced = support.metric(text, "podseg_managed_pods", state="enforced") or 0
    assert enforced >= 2
    assert not support.metric(text, "podseg_managed_pods", state="unprotected")
    # Isolated for ingress, yet Ready: the kubelet's probes from the node's bridge address pass.
    support.expect(kube, ns, "a", ips["b"], 80, allowed=False)
