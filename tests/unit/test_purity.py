"""The pure core (model, selectors, policy, nft rendering) must not import I/O modules."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
# podseg responder: payload parsing and the quarantine decision are pure too.
RESPONDER_PURE = ("severity", "findings", "falco", "wiz", "generic")
PURE = [
    ROOT / "agent" / "selectors.py",
    ROOT / "agent" / "model.py",
    *sorted((ROOT / "agent" / "policy").glob("*.py")),
    ROOT / "agent" / "dataplane" / "render_nft.py",
    ROOT / "agent" / "dataplane" / "incremental.py",  # issue 8: the patch is computed purely
    ROOT / "agent" / "eventkind.py",
    ROOT / "agent" / "dataplane" / "render_ipt.py",
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


def test_checker_catches_forbidden_imports() -> None:
    assert imported_roots("import os.path\nfrom subprocess import run\nimport agent.model") >= {
        "os",
        "subprocess",
    }
    assert "socket" in imported_roots("def f():\n    import socket\n")
    assert "__import__" in imported_roots("__import__('os')")
