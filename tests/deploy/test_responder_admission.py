"""deploy/responder/admission.yaml: the ValidatingAdmissionPolicy that keeps the responder's
ServiceAccount to the quarantine label and its three annotations, and its binding.

The objects validate against the Kubernetes schema; the policy matches pod updates (and pod
subresources) by exactly the responder's ServiceAccount, as the Deployment runs it. Every CEL
expression is evaluated here with cel-python over allowed and denied changes, against the
patch the responder really sends (through the API emulator), and against a plain-Python
statement of the intent over random changes. cel-python does not type-check against the
Kubernetes schema as the API server does: the real-cluster tier (tests/cluster) applies the
policy to an API server as well.
"""

from __future__ import annotations

import copy
import datetime
import pathlib
from collections.abc import Callable
from typing import Any

import celpy
import hypothesis
import hypothesis.strategies as st
import kubernetes.client
import kubernetes_validate
import pytest
import yaml

from agent.responder import findings, generic, patcher, settings
from testbed.emulator import patching, server
from tests.support import apiclient
from tests.support.manifests import find

LABEL = findings.QUARANTINE_LABEL
WRITTEN = (findings.QUARANTINED_BY, findings.QUARANTINE_REASON, findings.QUARANTINED_AT)
ALLOW_FROM = "podseg.io/quarantine-allow-from"
NAME = "podseg-responder-quarantine-only"
RESPONDER = "system:serviceaccount:podseg-system:podseg-responder"
OTHERS = [
    "system:serviceaccount:other:podseg-responder",
    "system:serviceaccount:podseg-system:podseg-agent",
    "kubernetes-admin",
    "system:node:node-1",
]
NOW = datetime.datetime(2026, 11, 28, 23, 50, 1, tzinfo=datetime.UTC)

Rendered = dict[str, list[dict[str, Any]]]


class Policy:
    """A ValidatingAdmissionPolicy evaluated as the API server does: matchConditions (all true,
    or the request is not evaluated), then the variables in order, then every validation (an
    evaluation error counts as a failure: failurePolicy Fail)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        env = celpy.Environment()

        def compiled(expression: str) -> Any:
            return env.program(env.compile(expression))

        self.conditions = [compiled(c["expression"]) for c in spec.get("matchConditions", [])]
        self.variables = [(v["name"], compiled(v["expression"])) for v in spec["variables"]]
        self.validations = [(compiled(v["expression"]), v["message"]) for v in spec["validations"]]

    def admit(self, user: str, old: dict[str, Any], new: dict[str, Any]) -> list[str] | None:
        """None when the policy does not apply, else the messages of the failed validations
        (empty: allowed)."""
        request = {
            "userInfo": {"username": user},
            "operation": "UPDATE",
            "namespace": new["metadata"]["namespace"],
            "name": new["metadata"]["name"],
        }
        activation: dict[str, Any] = {
            "request": celpy.json_to_cel(request),
            "object": celpy.json_to_cel(new),
            "oldObject": celpy.json_to_cel(old),
        }
        if not all(_true(c.evaluate(activation)) for c in self.conditions):
            return None
        values: dict[Any, Any] = {}
        for name, program in self.variables:
            activation["variables"] = celpy.celtypes.MapType(values)
            values[celpy.celtypes.StringType(name)] = program.evaluate(activation)
        activation["variables"] = celpy.celtypes.MapType(values)
        return [m for program, m in self.validations if not _true(_run(program, activation))]


def _run(program: Any, activation: dict[str, Any]) -> Any:
    try:
        return program.evaluate(activation)
    except celpy.CELEvalError as exc:
        return exc


def _true(value: Any) -> bool:
    return isinstance(value, celpy.celtypes.BoolType) and bool(value)


@pytest.fixture(scope="module")
def policy_object() -> dict[str, Any]:
    from tests.support import kustomize
    from tests.support.manifests import BASES

    return find(kustomize.render(BASES["responder"]), "ValidatingAdmissionPolicy", NAME)


@pytest.fixture(scope="module")
def policy(policy_object: dict[str, Any]) -> Policy:
    return Policy(policy_object["spec"])


def a_pod(namespace: str = "shop") -> dict[str, Any]:
    """A pod as the API server stores it: owned by a ReplicaSet, running, with managed fields."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-7d9f8b6c5-x2k4p",
            "namespace": namespace,
            "uid": "5c1f0e2d-9a8b-4c7d-8e6f-0a1b2c3d4e5f",
            "resourceVersion": "4711",
            "creationTimestamp": "2026-11-28T20:00:00Z",
            "labels": {"app": "web", "pod-template-hash": "7d9f8b6c5"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-28T19:59:00Z"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-7d9f8b6c5",
                    "uid": "0b9e8d7c-6f5a-4e3d-8c2b-1a0f9e8d7c6b",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}],
        },
        "spec": {
            "serviceAccountName": "web",
            "nodeName": "node-1",
            "containers": [
                {
                    "name": "web",
                    "image": "registry.example.invalid/shop/web:1.4.2",
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                }
            ],
        },
        "status": {"phase": "Running", "podIP": "10.244.1.17"},
    }


def responder_patch(old: dict[str, Any]) -> dict[str, Any]:
    """The pod after the responder's own merge patch (as the patcher builds it)."""
    finding = generic.parse({"namespace": "shop", "pod": "web", "severity": "critical"})
    meta = old["metadata"]
    body = findings.quarantine_patch(finding, NOW, meta["resourceVersion"], meta["uid"])
    new = patching.merge_patch(copy.deepcopy(old), body)
    new["metadata"]["managedFields"] = [{"manager": "python", "operation": "Update"}]
    return new


def changed(old: dict[str, Any], change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    new = responder_patch(old)  # the responder's change, and one more
    change(new)
    return new


# -- the objects ------------------------------------------------------------------------------


def test_policy_and_binding_validate_and_bind_with_deny(rendered: Rendered) -> None:
    version = kubernetes_validate.latest_version()
    vap = find(rendered["responder"], "ValidatingAdmissionPolicy", NAME)
    binding = find(rendered["responder"], "ValidatingAdmissionPolicyBinding", NAME)
    for obj in (vap, binding):
        assert obj["apiVersion"] == "admissionregistration.k8s.io/v1"
        kubernetes_validate.validate(obj, version, strict=True)
        assert "namespace" not in obj["metadata"]  # cluster-scoped
    assert binding["spec"] == {"policyName": NAME, "validationActions": ["Deny"]}
    assert vap["spec"]["failurePolicy"] == "Fail"
    broken = copy.deepcopy(vap)
    broken["spec"]["validations"][0]["expresion"] = broken["spec"]["validations"][0].pop(
        "expression"
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_policy_matches_pod_updates_by_the_deployments_service_account(
    rendered: Rendered, policy: Policy
) -> None:
    vap = find(rendered["responder"], "ValidatingAdmissionPolicy", NAME)
    assert vap["spec"]["matchConstraints"] == {
        "resourceRules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["UPDATE"],  # a PATCH is an UPDATE to admission
                "resources": ["pods", "pods/*"],
            }
        ]
    }
    deployment = find(rendered["responder"], "Deployment", "podseg-responder")
    account = find(
        rendered["responder"],
        "ServiceAccount",
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
    )
    meta = account["metadata"]
    assert f"system:serviceaccount:{meta['namespace']}:{meta['name']}" == RESPONDER
    old = a_pod()
    assert policy.admit(RESPONDER, old, responder_patch(old)) == []
    for user in OTHERS:
        assert policy.admit(user, old, changed(old, _image)) is None  # not evaluated


def test_protected_namespaces_are_the_responders_defaults(policy_object: dict[str, Any]) -> None:
    (rule,) = [v for v in policy_object["spec"]["validations"] if "kube-system" in v["expression"]]
    listed = yaml.safe_load(rule["expression"].split(" in ", 1)[1].rstrip(")"))
    assert set(listed) == settings.DEFAULT_PROTECTED_NAMESPACES


# -- what is allowed --------------------------------------------------------------------------


def _bare(pod: dict[str, Any]) -> dict[str, Any]:
    for key in ("labels", "annotations", "ownerReferences"):
        pod["metadata"].pop(key)
    pod.pop("status")
    return pod


def _released(pod: dict[str, Any]) -> dict[str, Any]:
    """Quarantined once, released by hand (label removed, the annotations kept as a record)."""
    pod = responder_patch(pod)
    del pod["metadata"]["labels"][LABEL]
    pod["metadata"]["annotations"][findings.QUARANTINE_REASON] = "an earlier finding"
    return pod


@pytest.mark.parametrize(
    "old",
    [a_pod(), _bare(a_pod()), _released(a_pod())],
    ids=["running-pod", "bare-pod", "released-pod"],
)
def test_the_responders_patch_is_allowed(policy: Policy, old: dict[str, Any]) -> None:
    assert policy.admit(RESPONDER, old, responder_patch(old)) == []
    assert policy.admit(RESPONDER, old, copy.deepcopy(old)) == []  # a no-op update


def test_the_patch_the_responder_really_sends_is_allowed(
    policy: Policy, tmp_path: pathlib.Path
) -> None:
    """The real patcher against the API emulator: the pod before and after is allowed."""
    emulator = server.EmulatorThread()
    emulator.start()
    try:
        client = apiclient.client_for(emulator, tmp_path)
        core = kubernetes.client.CoreV1Api(client)
        core.create_namespace({"metadata": {"name": "shop"}})
        pod = apiclient.pod("web-7d9f8b6c5-x2k4p", {"app": "web"}, node="node-1")
        pod["metadata"]["annotations"] = {"team": "shop", ALLOW_FROM: "10.0.0.9/32"}
        core.create_namespaced_pod("shop", pod)
        name = pod["metadata"]["name"]
        before = client.sanitize_for_serialization(core.read_namespaced_pod(name, "shop"))
        finding = generic.parse(
            {"namespace": "shop", "pod": name, "severity": "critical", "reason": "x"}
        )
        result = patcher.Patcher(client).quarantine(finding)
        after = client.sanitize_for_serialization(core.read_namespaced_pod(name, "shop"))
        client.close()
    finally:
        emulator.stop()
    assert result.outcome is patcher.Outcome.QUARANTINED
    assert after["metadata"]["labels"][LABEL] == "true"
    assert policy.admit(RESPONDER, before, after) == []


# -- what is denied ---------------------------------------------------------------------------


def _image(pod: dict[str, Any]) -> None:
    pod["spec"]["containers"][0]["image"] = "registry.example.invalid/attacker:latest"


def _labels(pod: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = pod["metadata"].setdefault("labels", {})
    return labels


def _notes(pod: dict[str, Any]) -> dict[str, str]:
    notes: dict[str, str] = pod["metadata"].setdefault("annotations", {})
    return notes


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = pod["spec"]["containers"][0]
    return container


SPEC = "spec or status"
OWNERS = "ownerReferences or finalizers"
LABELS = "labels other than podseg.io/quarantine"
NOTES = "annotations other than"
RESTARTED = "kubectl.kubernetes.io/restartedAt"
DENIED: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "image": (_image, SPEC),
    "command": (lambda p: _container(p).update(command=["/bin/sh"]), SPEC),
    "env": (lambda p: _container(p).update(env=[{"name": "X", "value": "1"}]), SPEC),
    "resources": (lambda p: _container(p).update(resources={}), SPEC),
    "another container": (
        lambda p: p["spec"]["containers"].append({"name": "x", "image": "x"}),
        SPEC,
    ),
    "ephemeral container": (
        lambda p: p["spec"].update(ephemeralContainers=[{"name": "d", "image": "busybox"}]),
        SPEC,
    ),
    "service account": (lambda p: p["spec"].update(serviceAccountName="admin"), SPEC),
    "status": (lambda p: p["status"].update(phase="Failed"), SPEC),
    "status removed": (lambda p: p.pop("status"), SPEC),
    "finalizer": (lambda p: p["metadata"].update(finalizers=["example.com/hold"]), OWNERS),
    "owner emptied": (lambda p: p["metadata"].update(ownerReferences=[]), OWNERS),
    "owner removed": (lambda p: p["metadata"].pop("ownerReferences"), OWNERS),
    "another label": (lambda p: _labels(p).update(app="evil"), LABELS),
    "a new label": (lambda p: _labels(p).update({"podseg.io/mode": "visibility"}), LABELS),
    "a label removed": (lambda p: _labels(p).pop("pod-template-hash"), LABELS),
    "allow-from": (lambda p: _notes(p).update({ALLOW_FROM: "0.0.0.0/0"}), NOTES),
    "another annotation": (lambda p: _notes(p).update({RESTARTED: "now"}), NOTES),
    "an annotation removed": (lambda p: _notes(p).pop(RESTARTED), NOTES),
}


@pytest.mark.parametrize("what", sorted(DENIED))
def test_any_other_change_by_the_responder_is_denied(policy: Policy, what: str) -> None:
    """The responder's own change plus one more: denied, with the message that says why; the
    same request by anyone else is not evaluated."""
    change, message = DENIED[what]
    old = a_pod()
    new = responder_patch(old)
    change(new)
    failed = policy.admit(RESPONDER, old, new)
    assert failed, f"{what}: allowed"
    assert any(message in m for m in failed), (what, failed)
    assert policy.admit("kubernetes-admin", old, new) is None


@pytest.mark.parametrize("value", ["false", "", "no", None])
def test_the_responder_cannot_lift_a_quarantine(policy: Policy, value: str | None) -> None:
    old = responder_patch(a_pod())
    new = copy.deepcopy(old)
    if value is None:
        del new["metadata"]["labels"][LABEL]
    else:
        new["metadata"]["labels"][LABEL] = value
    assert policy.admit(RESPONDER, old, new) == [
        'the responder may only set the label podseg.io/quarantine to "true"'
    ]


def test_even_the_responders_patch_is_denied_in_a_protected_namespace(policy: Policy) -> None:
    for namespace in sorted(settings.DEFAULT_PROTECTED_NAMESPACES):
        old = a_pod(namespace)
        failed = policy.admit(RESPONDER, old, responder_patch(old))
        assert failed == ["the responder may not change pods in kube-system or podseg-system"]


# -- the intent, stated in Python, over random changes ---------------------------------------


def intended(user: str, old: dict[str, Any], new: dict[str, Any]) -> bool | None:
    """What the policy is meant to do: None when not the responder's request; else allowed
    iff outside the protected namespaces, nothing but the quarantine label and the three
    annotations differ, and the label is either as it was or "true"."""
    if user != RESPONDER:
        return None
    if new["metadata"]["namespace"] in settings.DEFAULT_PROTECTED_NAMESPACES:
        return False

    def rest(pod: dict[str, Any]) -> dict[str, Any]:
        pod = copy.deepcopy(pod)
        meta = pod["metadata"]
        for key in ("resourceVersion", "managedFields"):
            meta.pop(key, None)
        labels = {k: v for k, v in (meta.pop("labels", None) or {}).items() if k != LABEL}
        notes = {k: v for k, v in (meta.pop("annotations", None) or {}).items()}
        notes = {k: v for k, v in notes.items() if k not in WRITTEN}
        return pod | {"labels": labels, "annotations": notes}

    before = (old["metadata"].get("labels") or {}).get(LABEL, "")
    after = (new["metadata"].get("labels") or {}).get(LABEL, "")
    return rest(old) == rest(new) and after in (before, "true")


KEYS = st.sampled_from([LABEL, *WRITTEN, ALLOW_FROM, "app", "team", "podseg.io/quarantined"])
VALUES = st.sampled_from(["true", "false", "", "x"])
MAPS = st.none() | st.dictionaries(KEYS, VALUES, max_size=4)
OTHER_CHANGES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "none": lambda pod: None,
    "image": _image,
    "status": lambda p: p["status"].update(phase="Failed"),
    "finalizers": lambda p: p["metadata"].update(finalizers=["x"]),
    "owner": lambda p: p["metadata"].pop("ownerReferences"),
    # What the API server changes by itself on every write: not the responder's doing.
    "resourceVersion": lambda p: p["metadata"].update(resourceVersion="4712"),
    "managedFields": lambda p: p["metadata"].update(managedFields=[]),
}


def _with(pod: dict[str, Any], labels: Any, notes: Any) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    for key, value in (("labels", labels), ("annotations", notes)):
        if value is None:
            pod["metadata"].pop(key, None)
        else:
            pod["metadata"][key] = value
    return pod


EDITS = st.lists(
    st.tuples(st.sampled_from(["labels", "annotations"]), KEYS, VALUES | st.none()), max_size=3
)


def _edited(pod: dict[str, Any], edits: list[tuple[str, str, str | None]]) -> dict[str, Any]:
    """`pod` with each (map, key, value) edit: set the key, or delete it (value None)."""
    pod = copy.deepcopy(pod)
    for where, key, value in edits:
        values = pod["metadata"].setdefault(where, {})
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    return pod


@hypothesis.settings(max_examples=500, deadline=None, database=None)
@hypothesis.given(
    user=st.sampled_from([RESPONDER, RESPONDER, RESPONDER, OTHERS[0]]),
    namespace=st.sampled_from(["shop", "shop", "shop", "kube-system"]),
    labels=MAPS,
    notes=MAPS,
    edits=EDITS,
    other=st.sampled_from(["none"] * 6 + sorted(OTHER_CHANGES)),
)
def test_the_policy_does_what_it_means_over_random_changes(
    policy_object: dict[str, Any],
    user: str,
    namespace: str,
    labels: Any,
    notes: Any,
    edits: list[tuple[str, str, str | None]],
    other: str,
) -> None:
    """A pod with random labels and annotations, changed by a few random edits of them and
    perhaps one other change: the policy's verdict is `intended`'s."""
    policy = _cached_policy(policy_object)
    old = _with(a_pod(namespace), labels, notes)
    new = _edited(old, edits)
    OTHER_CHANGES[other](new)
    failed = policy.admit(user, old, new)
    verdict = None if failed is None else not failed
    expected = intended(user, old, new)
    hypothesis.event(f"expected {expected}")
    assert verdict == expected, (labels, notes, edits, other, failed)


_POLICIES: dict[int, Policy] = {}


def _cached_policy(policy_object: dict[str, Any]) -> Policy:
    key = id(policy_object)
    if key not in _POLICIES:
        _POLICIES[key] = Policy(policy_object["spec"])
    return _POLICIES[key]
