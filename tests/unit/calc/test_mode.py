"""The policy mode label: the pod's label wins over its namespace's, and an unknown value
enforces (and is reported)."""

from __future__ import annotations

from agent import model
from agent.calc import compile as calc_compile
from agent.calc import mode as calc_mode
from agent.calc import ruleset


def test_mode_label_pod_wins_and_unknown_values_enforce() -> None:
    vis, enf = ruleset.PolicyMode.VISIBILITY, ruleset.PolicyMode.ENFORCE
    namespaces = {"x": model.Namespace("x", {calc_mode.LABEL: "visibility"})}
    pod = model.Pod("x", "a")
    assert calc_mode.resolve(pod, namespaces) == (vis, None)
    pinned = model.Pod("x", "a", labels={calc_mode.LABEL: "enforce"})
    assert calc_mode.resolve(pinned, namespaces) == (enf, None)
    assert calc_mode.resolve(pod, {}) == (enf, None)
    typo = model.Pod("x", "a", labels={calc_mode.LABEL: "visiblity"})
    assert calc_mode.resolve(typo, namespaces) == (enf, "visiblity")
    compiled = calc_compile.compile_pod(pod, [], namespaces, [pod])
    assert compiled.mode is vis
