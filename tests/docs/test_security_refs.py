"""docs/security.md backs each claim with a test (`tests/...py` and `::test_name`): every test
it names must exist, so a renamed or deleted test cannot leave a claim without its proof."""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?(?:::(\w+))?[^`]*`")


def _tests_in(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def references(text: str) -> list[tuple[str, str | None]]:
    """(file, test name or None) for each backticked reference; `::name` alone refers to the
    last file named before it."""
    found: list[tuple[str, str | None]] = []
    last: str | None = None
    for match in REFERENCE.finditer(text):
        path, name = match.group(1), match.group(2)
        if path is None and name is None:
            continue
        path = path or last
        assert path is not None, f"`::{name}` names no file before it"
        last = path
        found.append((path, name))
    return found


def test_references_parse_files_and_names() -> None:
    text = "`tests/a/b.py::test_x`, `::test_y[4/6]` and `tests/c.py`"
    assert references(text) == [
        ("tests/a/b.py", "test_x"),
        ("tests/a/b.py", "test_y"),
        ("tests/c.py", None),
    ]


def test_every_test_security_md_names_exists() -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    missing = []
    refs = references(text)
    for path, name in refs:
        file = ROOT / path
        if not file.exists():
            missing.append(path)
        elif name is not None and name not in _tests_in(file):
            missing.append(f"{path}::{name}")
    assert len(refs) > 20
    assert missing == []
