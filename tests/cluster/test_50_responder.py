"""`podseg responder` (deploy/responder/) on the real cluster, installed as docs/operations.md
says (token Secret, `kubectl apply -k deploy/responder/`, rollout status), under its shipped
RBAC: a finding posted to its Service quarantines the named pod, and the agent cuts it off."""

from __future__ import annotations

import json
import pathlib
import secrets
from typing import Any

from tests.cluster import support
from tests.cluster.support import expect

RESPONDER_SA = "system:serviceaccount:podseg-system:podseg-responder"


def test_a_finding_quarantines_the_pod(
    kube: support.Kube, podseg: dict[str, pathlib.Path], namespace: Any
) -> None:
    # a fresh install, as docs/operations.md says: the token Secret, then the kustomization
    kube.run("delete", "-k", str(podseg["responder"]), "--ignore-not-found", "--wait=true")
    kube.run(
        "-n", support.PODSEG_NS, "delete", "secret", "podseg-responder-token", "--ignore-not-found"
    )
    support.wait_until(
        lambda: not _responder_pods(kube), timeout=60, what="the previous responder pods gone"
    )
    token = secrets.token_hex(32)
    kube.run(
        "-n", support.PODSEG_NS, "create", "secret", "generic", "podseg-responder-token",
        f"--from-literal=token={token}",
    )  # fmt: skip
    kube.run("apply", "-k", str(podseg["responder"]))
    kube.run(
        "-n",
        support.PODSEG_NS,
        "rollout",
        "status",
        "deployment/podseg-responder",
        "--timeout=180s",
    )
    vip = kube.json("-n", support.PODSEG_NS, "get", "service", "podseg-responder")["spec"][
        "clusterIP"
    ]
    url = f"http://{vip}:8080/findings/generic"

    ns = namespace("responder")
    ips = support.run_pods(kube, ns, {"client": {"app": "client"}, "victim": {"app": "victim"}})
    expect(kube, ns, "client", ips["victim"], 80, allowed=True)

    finding = {
        "namespace": ns,
        "pod": "victim",
        "severity": "critical",
        "reason": "outbound connection to a known C2 host",
        "source": "psg-cluster-test",
    }
    wrong = _post(kube, url, "not-the-token", finding)
    assert wrong["status"] == 401, wrong
    answer = _post(kube, url, token, finding)
    assert answer["status"] == 200 and answer["body"]["outcome"] == "quarantined", answer
    pod = kube.json("-n", ns, "get", "pod", "victim")
    assert pod["metadata"]["labels"]["podseg.io/quarantine"] == "true"
    assert pod["metadata"]["annotations"]["podseg.io/quarantined-by"].startswith(
        "podseg-responder/"
    )
    expect(kube, ns, "client", ips["victim"], 80, allowed=False)
    expect(kube, ns, "victim", ips["client"], 80, allowed=False)
    again = _post(kube, url, token, finding)
    assert again["body"]["outcome"] == "unchanged", again

    # the responder ran under its own ServiceAccount and role, and was never refused
    for name in _responder_pods(kube):
        assert support.rbac_denials(kube.logs(support.PODSEG_NS, name)) == []
    assert _can(kube, "patch", "pods") and _can(kube, "get", "pods")
    assert not _can(kube, "list", "pods") and not _can(kube, "create", "events")


def _post(kube: support.Kube, url: str, token: str, finding: dict[str, Any]) -> dict[str, Any]:
    result = support.node_curl(
        kube.config,
        "-X", "POST", url,
        "-H", f"Authorization: Bearer {token}",
        "-H", "Content-Type: application/json",
        "--data", json.dumps(finding),
        "-w", "\n%{http_code}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    return {"status": int(status), "body": json.loads(body) if body.strip() else {}}


def _responder_pods(kube: support.Kube) -> list[str]:
    listed = kube.json(
        "-n", support.PODSEG_NS, "get", "pods", "-l", "app.kubernetes.io/component=responder"
    )
    return [f"pod/{p['metadata']['name']}" for p in listed["items"]]


def _can(kube: support.Kube, verb: str, resource: str) -> bool:
    result = kube.run("auth", "can-i", verb, resource, "-A", f"--as={RESPONDER_SA}", check=False)
    return result.stdout.strip() == "yes"
