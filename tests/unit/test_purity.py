"""The pure core (model, selectors, calc, rendering) must not import I/O modules, directly or
through another agent module."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
# podseg responder: payload parsing and the quarantine decision are pure too.
RESPONDER_PURE = ("severity", "findings", "falco", "wiz", "generic")
# The flow graph and what podseg map / recommend / whatif compute from it.
FLOW_TOOLS_PURE = ("graph", "layout", "draw", "recommend", "replay")
PURE = [
    ROOT / "agent" / "selectors.py",
    ROOT / "agent" / "model.py",
    ROOT / "agent" / "k8s" / "convert.py",
    ROOT / "agent" / "k8s" / "podwire.py",
    *sorted((ROOT / "agent" / "calc").glob("*.py")),
    *sorted((ROOT / "agent" / "tiers").glob("*.py")),
    ROOT / "agent" / "dataplane" / "netns.py",
    ROOT / "agent" / "dataplane" / "protocol.py",
    ROOT / "agent" / "dataplane" / "errors.py",
    ROOT / "agent" / "dataplane" / "worker" / "lanes.py",
    ROOT / "agent" / "dataplane" / "nft" / "render.py",
    ROOT / "agent" / "dataplane" / "nft" / "incremental.py",
    ROOT / "agent" / "dataplane" / "nft" / "fastpatch.py",
    ROOT / "agent" / "dataplane" / "nft" / "tierpatch.py",
    ROOT / "agent" / "dataplane" / "nft" / "setdiff.py",
    ROOT / "agent" / "dataplane" / "nft" / "firstfill.py",
    ROOT / "agent" / "dataplane" / "nft" / "hooks.py",
    ROOT / "agent" / "dataplane" / "nft" / "pending.py",
    ROOT / "agent" / "dataplane" / "ipt" / "render.py",
    ROOT / "agent" / "dataplane" / "ipt" / "incremental.py",
    ROOT / "agent" / "dataplane" / "ipt" / "fastpatch.py",
    ROOT / "agent" / "sync" / "eventkind.py",
    ROOT / "agent" / "k8s" / "convert.py",
    *(ROOT / "agent" / "flows" / f"{m}.py" for m in FLOW_TOOLS_PURE),
    ROOT / "agent" / "durations.py",
    *(ROOT / "agent" / "responder" / f"{m}.py" for m in RESPONDER_PURE),
]
FORBIDDEN = {
    "subprocess",
    "socket",
    "os",
    "kubernetes",
    "aiohttp",
    "pyroute2",
    "prometheus_client",
    "asyncio",
    "threading",
    "ctypes",
}


def imported_roots(source: str) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            roots.add("__import__")
    return roots


def test_pure_modules_exist() -> None:
    for path in PURE:
        assert path.is_file(), path
    assert len(PURE) >= 6


def test_pure_modules_import_no_io() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            imported_roots(path.read_text()) & (FORBIDDEN | {"__import__"})
        )
        for path in PURE
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def _agent_imports(source: str) -> set[pathlib.Path]:
    """The agent modules `source` imports (as files), for the transitive check."""
    found: set[pathlib.Path] = set()
    tree = ast.parse(source)
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: never imported at run time
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("agent"):
            base = ROOT.joinpath(*node.module.split("."))
            for alias in node.names:
                for candidate in (base / f"{alias.name}.py", base / alias.name / "__init__.py"):
                    if candidate.is_file():
                        found.add(candidate)
            if base.with_suffix(".py").is_file():
                found.add(base.with_suffix(".py"))
    return found


def test_pure_modules_import_only_pure_agent_modules() -> None:
    pure = set(PURE)
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            str(dep.relative_to(ROOT)) for dep in _agent_imports(path.read_text()) - pure
        )
        for path in PURE
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_checker_catches_forbidden_imports() -> None:
    assert imported_roots("import os.path\nfrom subprocess import run\nimport agent.model") >= {
        "os",
        "subprocess",
    }
    assert "socket" in imported_roots("def f():\n    import socket\n")
    assert "__import__" in imported_roots("__import__('os')")
