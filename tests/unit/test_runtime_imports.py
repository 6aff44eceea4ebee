"""The runtime package `agent` stands alone: it never imports the test tooling (`testbed`, the
podseg-testbed distribution) nor what only that tooling needs (`jsonpatch`), so the wheel and
the image work without them. `podseg demo` is the one sanctioned reference: the CLI looks
`testbed.demo` up by name when the command runs, never at import time."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
AGENT = ROOT / "agent"
TOOLING_ONLY = {"testbed", "jsonpatch"}
# (module file, function) allowed to name testbed as a string: the `podseg demo` dispatch.
LATE_LOOKUPS = {("agent/cli.py", "_demo")}


def _agent_files() -> list[pathlib.Path]:
    files = sorted(AGENT.rglob("*.py"))
    assert len(files) > 40, "agent/ moved? this test scans nothing"
    return files


def _imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _root(name: str) -> str:
    return name.split(".")[0]


def test_no_import_statement_in_agent_names_the_tooling() -> None:
    offenders = {
        path.relative_to(ROOT).as_posix(): sorted(
            n for n in _imported(ast.parse(path.read_text())) if _root(n) in TOOLING_ONLY
        )
        for path in _agent_files()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_testbed_is_named_only_by_the_demo_dispatch_inside_a_function() -> None:
    seen: set[tuple[str, str]] = set()
    for path in _agent_files():
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text())
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            if _root(node.value) not in TOOLING_ONLY or " " in node.value:
                continue  # prose (a message, a docstring) may mention the package
            owner = next((f.name for f in functions if node in ast.walk(f)), "<module level>")
            seen.add((rel, owner))
    assert seen <= LATE_LOOKUPS, f"agent/ refers to the test tooling: {sorted(seen - LATE_LOOKUPS)}"


def test_importing_every_agent_module_loads_no_tooling() -> None:
    """What the static checks above cannot see (a dependency pulling it in, __import__ tricks):
    import every module of agent/ in a fresh interpreter and look at sys.modules."""
    modules = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in _agent_files()
        if path.name != "__main__.py"  # importing it runs the command line
    )
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert "agent" in loaded
    assert loaded.isdisjoint(TOOLING_ONLY), sorted(loaded & TOOLING_ONLY)
