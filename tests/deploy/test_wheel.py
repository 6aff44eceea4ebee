"""The runtime wheel (what `pip install .` and the image get) is the agent and nothing else.

It is built here, offline, from a copy of the working tree (so a stale build/ directory cannot
hide or add anything): every runtime module is in it; the test and demo tooling (testbed/:
the API emulator, the netns sandbox, `podseg demo`) is not, under any path; and it does not
depend on what only that tooling needs (jsonpatch).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.parser import HeaderParser

import pytest

from tests.support import manifests

ROOT = manifests.ROOT
TOOLING_PARTS = {"testbed", "emulator", "sandbox"}
TOOLING_ONLY_DEPS = {"jsonpatch", "podseg-testbed"}
RUNTIME_DEPS = {
    *("kubernetes", "pyroute2", "prometheus-client", "structlog", "aiohttp", "pyyaml", "msgspec"),
}
NOT_COPIED = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    source = tmp_path_factory.mktemp("source") / "podseg"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_COPIED, ".hypothesis"))
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"),
            *("--no-index", "-q", "-w", str(out), str(source)),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    built = sorted(out.glob("*.whl"))
    assert [w.name.split("-")[0] for w in built] == ["podseg"], built
    with zipfile.ZipFile(built[0]) as archive:
        yield archive


def _metadata(wheel: zipfile.ZipFile) -> tuple[str, list[str]]:
    (path,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    headers = HeaderParser().parsestr(wheel.read(path).decode())
    return path, headers.get_all("Requires-Dist") or []


def _dist_name(requirement: str) -> str:
    for stop in "<>=!~;[ (":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower().replace("_", "-")


def test_the_wheel_holds_no_test_or_demo_tooling(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    tooling = [
        n
        for n in names
        if TOOLING_PARTS & set(pathlib.PurePosixPath(n).parts) or n.endswith("/demo.py")
    ]
    assert tooling == []
    for gone in ("agent/emulator/", "agent/sandbox/", "agent/demo.py", "testbed/"):
        assert not any(n.startswith(gone) for n in names), gone
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"agent"}


def test_every_runtime_module_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "agent").rglob("*.py")}
    for module in ("agent/app.py", "agent/__main__.py", "agent/dataplane/worker/__init__.py"):
        assert module in source, f"{module} moved: update this test"
    assert source <= names, sorted(source - names)


def test_the_wheel_does_not_depend_on_the_tooling(wheel: zipfile.ZipFile) -> None:
    path, requires = _metadata(wheel)
    needed = {_dist_name(r) for r in requires}
    assert needed >= RUNTIME_DEPS, f"{path}: {requires}"  # the parsing sees the dependencies
    assert needed.isdisjoint(TOOLING_ONLY_DEPS), sorted(needed & TOOLING_ONLY_DEPS)
    entry_points = wheel.read(path.replace("METADATA", "entry_points.txt")).decode()
    assert "podseg = agent.cli:main" in entry_points
