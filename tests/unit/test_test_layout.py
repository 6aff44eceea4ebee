"""The test suite's layout: tiers at the top of tests/, unit tests mirroring agent/, shared
helpers only in tests/support, and no code importing tests.

* No module under tests/ imports a test module (`test_*`) or a conftest: what tests share lives
  in tests/support (plain modules) and fixtures in conftest.py files.
* Nothing under agent/, testbed/ or scripts/ imports `tests`.
* tests/unit/<package>/test_<module>[_<aspect>].py names a module of agent/<package>, and
  tests/unit/test_<module>[_<aspect>].py a top-level module of agent (or checks the package
  as a whole).
* Every `tests/...` path named in the README, docs/, deploy/ and scripts/ exists.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
AGENT = ROOT / "agent"
TIERS = {"unit", "kernel", "e2e", "chaos", "deploy", "docs", "testbed", "support", "cluster"}
# Unit tests of the package `agent` as a whole, not of one module.
WHOLE_PACKAGE = {
    "test_purity.py",
    "test_runtime_imports.py",
    "test_test_layout.py",
    "test_sizes.py",
}


def imported_modules(path: pathlib.Path) -> list[str]:
    """Every module `path` imports, as dotted names (`from a import b` gives a and a.b)."""
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            out.append(node.module)
            out.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def imports_of_tests(path: pathlib.Path) -> list[str]:
    """The test modules and conftests that `path` imports."""
    return [
        name
        for name in imported_modules(path)
        if name.split(".")[0] == "tests"
        and (name.split(".")[-1].startswith("test_") or name.split(".")[-1] == "conftest")
    ]


def python_files(*roots: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for root in roots for p in root.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", python_files(TESTS), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_test_module_imports_another(path: pathlib.Path) -> None:
    found = imports_of_tests(path)
    assert not found, (
        f"{path.relative_to(ROOT)} imports {found}: move what is shared to tests/support "
        "(helpers) or a conftest.py (fixtures)"
    )


def test_the_import_check_sees_every_form(tmp_path: pathlib.Path) -> None:
    sample = tmp_path / "sample.py"
    for line in (
        "from tests.unit import test_affected",
        "from tests.unit.test_affected import pod",
        "import tests.kernel.test_render_kernel",
        "from tests import conftest",
        "from tests.e2e.conftest import Model",
    ):
        sample.write_text(line + "\n")
        assert imports_of_tests(sample), line
    sample.write_text("from tests.support import kernel\nfrom agent.calc import affected\n")
    assert not imports_of_tests(sample)


def test_runtime_testbed_and_scripts_never_import_tests() -> None:
    found = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in python_files(AGENT, ROOT / "testbed", ROOT / "scripts")
        for name in imported_modules(path)
        if name == "tests" or name.startswith("tests.")
    ]
    assert not found, "only tests may import tests:\n" + "\n".join(found)


def test_the_top_of_tests_holds_only_the_tiers() -> None:
    directories = {p.name for p in TESTS.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert directories <= TIERS, f"not a tier: {sorted(directories - TIERS)}"
    assert not [p.name for p in TESTS.glob("test_*.py")], "a test module outside the tiers"


def _names_a_module(stem: str, modules: set[str]) -> bool:
    name = stem.removeprefix("test_")
    return any(name == m or name.startswith(f"{m}_") for m in modules)


def test_unit_tests_mirror_the_agent_package() -> None:
    problems: list[str] = []
    for path in sorted((TESTS / "unit").rglob("test_*.py")):
        relative = path.relative_to(TESTS / "unit")
        package = AGENT.joinpath(*relative.parts[:-1])
        if not (package / "__init__.py").is_file():
            problems.append(f"{relative}: agent/{relative.parent} is not a package")
            continue
        modules = {p.stem for p in package.glob("*.py")} | {
            p.name for p in package.iterdir() if (p / "__init__.py").is_file()
        }
        modules.discard("__init__")
        if relative.parent == pathlib.Path(".") and relative.name in WHOLE_PACKAGE:
            continue
        if not _names_a_module(path.stem, modules):
            problems.append(f"{relative}: names no module of agent/{relative.parent}")
    assert not problems, "\n".join(problems)


TEST_PATH = re.compile(r"\btests/[\w./-]*[\w/]")


def documents() -> list[pathlib.Path]:
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    texts += sorted(p for p in (ROOT / "deploy").rglob("*") if p.suffix in (".yaml", ".md"))
    texts += sorted(p for p in (ROOT / "scripts").rglob("*") if p.suffix in (".py", ".sh"))
    return texts


def test_paths_to_tests_named_in_docs_exist() -> None:
    missing = [
        f"{path.relative_to(ROOT)}: {match}"
        for path in documents()
        for match in TEST_PATH.findall(path.read_text())
        if not (ROOT / match).exists()
    ]
    assert not missing, "named but not there:\n" + "\n".join(missing)
