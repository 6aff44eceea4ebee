"""The policy mode label: the namespace's label decides, a pod's label may only make it
stricter (unless the operator allows loosening), and an unknown value enforces (and is
reported)."""

from __future__ import annotations

from agent import model
from agent.calc import compile as calc_compile
from agent.calc import mode as calc_mode
from agent.calc import ruleset


def test_mode_label_pod_tightens_only_and_unknown_values_enforce() -> None:
    vis, enf = ruleset.PolicyMode.VISIBILITY, ruleset.PolicyMode.ENFORCE
    namespaces = {"x": model.Namespace("x", {calc_mode.LABEL: "visibility"})}
    pod = model.Pod("x", "a")
    assert calc_mode.resolve(pod, namespaces) == calc_mode.Resolution(vis)
    pinned = model.Pod("x", "a", labels={calc_mode.LABEL: "enforce"})
    assert calc_mode.resolve(pinned, namespaces) == calc_mode.Resolution(enf)
    assert calc_mode.resolve(pod, {}) == calc_mode.Resolution(enf)
    typo = model.Pod("x", "a", labels={calc_mode.LABEL: "visiblity"})
    assert calc_mode.resolve(typo, namespaces) == calc_mode.Resolution(enf, "visiblity")
    # A pod cannot opt itself out of an enforcing namespace, unless the operator allows it.
    loose = model.Pod("y", "a", labels={calc_mode.LABEL: "visibility"})
    enforcing = {"y": model.Namespace("y", {calc_mode.LABEL: "enforce"})}
    for spaces in (enforcing, {}):
        assert calc_mode.resolve(loose, spaces) == calc_mode.Resolution(enf, refused="visibility")
        assert calc_mode.resolve(loose, spaces, pod_may_loosen=True).mode is vis
    compiled = calc_compile.compile_pod(pod, [], namespaces, [pod])
    assert compiled.mode is vis
    compiled = calc_compile.compile_pod(pod, [], namespaces, [pod])
    assert compiled.mode is vis
