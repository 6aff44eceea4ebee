"""House rule: functions over 60 lines and classes over 310 lines are split, in the runtime
and the test bed, unless the module says why not with a `# size: <name> -- <reason>` line.
Long functions hide several concerns; the rule keeps each one reviewable on its own."""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
MAX_FUNCTION = 60
MAX_CLASS = 310
_EXEMPT = re.compile(r"#\s*size:\s*(\w+)\s*--\s*\S")


def oversized(path: pathlib.Path) -> list[str]:
    source = path.read_text()
    exempt = set(_EXEMPT.findall(source))
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            limit = MAX_CLASS if isinstance(node, ast.ClassDef) else MAX_FUNCTION
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit and node.name not in exempt:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length})")
    return found


def test_no_function_or_class_is_over_the_limit() -> None:
    files = sorted((ROOT / "agent").rglob("*.py")) + sorted((ROOT / "testbed").rglob("*.py"))
    assert [o for path in files for o in oversized(path)] == []


def test_the_check_sees_a_long_function_and_honours_a_reason(tmp_path: pathlib.Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION))
    long = tmp_path / "long.py"
    long.write_text(f"def f() -> None:\n{body}\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert oversized(long) == [f"long.py:1 f ({MAX_FUNCTION + 1})"]
        long.write_text(f"# size: f -- a table of constants\ndef f() -> None:\n{body}\n")
        assert oversized(long) == []
    finally:
        ROOT = saved
