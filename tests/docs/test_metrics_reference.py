"""The metrics reference (docs/metrics.md) documents exactly the metrics the code defines.

Every Prometheus collector in `agent.metrics` is listed once, with its exposition name, type
and label names, in the section of its registry (the agent's and the responder's endpoints
serve different registries). No other module of `agent/` defines a metric of its own, and every
`podseg_*` name the README or docs/ mention is one the code exports.
"""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import re

import prometheus_client
import prometheus_client.metrics

from agent import metrics

ROOT = pathlib.Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "metrics.md"
METRIC_CLASSES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}
ROW = re.compile(r"^\|\s*`(podseg_[a-z0-9_]+)`\s*\|\s*([a-z]+)\s*\|([^|]*)\|")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str  # as exposed: a counter's name ends in _total
    type: str
    labels: tuple[str, ...]
    group: str  # code: the agent.metrics attribute of its registry; docs: its `## ` section


def _registry_of(collector: object) -> str:
    holders = [
        attr
        for attr, value in vars(metrics).items()
        if isinstance(value, prometheus_client.CollectorRegistry)
        and collector in value._collector_to_names
    ]
    assert len(holders) == 1, f"{collector!r} is in registries {holders}, expected exactly one"
    return holders[0]


def defined() -> dict[str, Metric]:
    """Every metric agent.metrics defines, by exposed name."""
    out: dict[str, Metric] = {}
    for value in vars(metrics).values():
        if not isinstance(value, prometheus_client.metrics.MetricWrapperBase):
            continue
        kind = value._type
        name = value._name + ("_total" if kind == "counter" else "")
        out[name] = Metric(name, kind, tuple(value._labelnames), _registry_of(value))
    return out


def documented(text: str) -> list[Metric]:
    """Every metric row of a reference table, in order, grouped by its `## ` section."""
    rows: list[Metric] = []
    section = ""
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
            continue
        match = ROW.match(line)
        if match is not None:
            name, kind, label_cell = match.groups()
            rows.append(Metric(name, kind, tuple(re.findall(r"`([a-z_]+)`", label_cell)), section))
    return rows


def problems(code: dict[str, Metric], rows: list[Metric]) -> list[str]:
    """Every way the documented rows differ from the code; empty when they agree."""
    out: list[str] = []
    names = [row.name for row in rows]
    out += [f"documented twice: {n}" for n in sorted({n for n in names if names.count(n) > 1})]
    out += [f"not documented: {n}" for n in sorted(set(code) - set(names))]
    out += [f"documented but not defined: {n}" for n in sorted(set(names) - set(code))]
    for row in rows:
        want = code.get(row.name)
        if want is not None and (row.type, row.labels) != (want.type, want.labels):
            out.append(
                f"{row.name}: documented {row.type} {list(row.labels)}, "
                f"defined {want.type} {list(want.labels)}"
            )
    sections: dict[str, set[str]] = {}
    for row in rows:
        if row.name in code:
            sections.setdefault(code[row.name].group, set()).add(row.group)
    for registry, found in sorted(sections.items()):
        if len(found) != 1:
            out.append(f"metrics of {registry} are spread over sections {sorted(found)}")
    if len({frozenset(found) for found in sections.values()}) != len(sections):
        out.append("two registries share one section")
    return out


def defined_in_source() -> set[str]:
    """`podseg_*` names passed to a prometheus_client metric constructor anywhere in agent/."""
    names: set[str] = set()
    for path in sorted((ROOT / "agent").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if (
                called in METRIC_CLASSES
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and first.value.startswith("podseg_")
            ):
                names.add(first.value)
    return names


def test_the_reference_documents_exactly_the_defined_metrics() -> None:
    code = defined()
    rows = documented(REFERENCE.read_text())
    assert len(code) >= 20 and len(rows) >= 20
    found = problems(code, rows)
    assert not found, "docs/metrics.md disagrees with agent.metrics:\n" + "\n".join(found)


def test_the_check_catches_a_missing_a_repeated_and_a_wrong_row() -> None:
    code = defined()
    rows = documented(REFERENCE.read_text())
    first, second = rows[0], rows[1]
    broken = [
        dataclasses.replace(first, type="summary"),
        first,
        dataclasses.replace(second, labels=(*second.labels, "pod")),
        *rows[3:],
    ]
    found = "\n".join(problems(code, broken))
    assert f"documented twice: {first.name}" in found
    assert f"not documented: {rows[2].name}" in found
    assert f"{first.name}: documented summary" in found
    assert f"{second.name}: documented" in found


def test_no_module_outside_agent_metrics_defines_a_metric() -> None:
    code = defined()
    outside = {n for n in defined_in_source() if n not in code and n + "_total" not in code}
    assert not outside, f"metrics defined outside agent.metrics: {sorted(outside)}"


def test_every_metric_named_in_readme_and_docs_exists() -> None:
    code = defined()
    exported = set(code) | {
        m.name + suffix
        for m in code.values()
        if m.type == "histogram"
        for suffix in HISTOGRAM_SERIES
    }
    unknown = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
        for name in set(re.findall(r"\bpodseg_[a-z0-9_]*[a-z0-9]", path.read_text()))
        if name not in exported
    )
    assert not unknown, f"unknown metric names: {unknown}"
