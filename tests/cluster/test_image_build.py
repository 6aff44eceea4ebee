"""The test cluster's image and the Dockerfile's cannot drift: the local builder copies the
build context .dockerignore defines, runs the Dockerfile's own script, and takes ENV,
ENTRYPOINT, CMD and LABEL from the Dockerfile as `dockerfile-parse` reads them. Static: no
cluster, no root."""

from __future__ import annotations

import json
import subprocess

from dockerfile_parse import DockerfileParser

from tests.cluster import support

DOCKERFILE = support.ROOT / "Dockerfile"


def _context_files() -> set[str]:
    script = f"repo={support.ROOT}; " + _function("context_files") + "; context_files"
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def _function(name: str) -> str:
    text = (support.CLUSTER / "podseg-image.sh").read_text()
    start = text.index(f"{name}() {{")
    return text[start : text.index("\n}\n", start) + 2]


def _dockerignore_files() -> set[str]:
    """The files a `docker build` context holds under .dockerignore (its `!` entries)."""
    included = [
        line[1:].rstrip("/")
        for line in (support.ROOT / ".dockerignore").read_text().split()
        if line.startswith("!")
    ]
    files: set[str] = set()
    for entry in included:
        path = support.ROOT / entry
        if path.is_dir():
            files |= {
                p.relative_to(support.ROOT).as_posix()
                for p in path.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts
            }
        else:
            files.add(entry)
    return files


def test_the_local_build_context_is_the_dockerfiles() -> None:
    assert _context_files() == _dockerignore_files()
    assert "scripts/image/build-rootfs.sh" in _context_files()
    assert not [f for f in _context_files() if f.startswith(("testbed/", "tests/"))]


def test_the_local_image_configuration_is_the_dockerfiles() -> None:
    out = subprocess.run(
        ["python3", str(support.CLUSTER / "dockerfile-config.py"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    flags: dict[str, list[str]] = {}
    for line in out:
        key, _, value = line.partition("=")
        flags.setdefault(key, []).append(value)
    parser = DockerfileParser(path=str(DOCKERFILE))
    assert dict(v.split("=", 1) for v in flags["--label"]) == parser.labels
    assert dict(v.split("=", 1) for v in flags["--env"]) == parser.envs
    final = [i for i in parser.structure if i["instruction"] in ("ENTRYPOINT", "CMD")]
    for instruction in final:
        key = f"--{instruction['instruction'].lower()}"
        assert json.loads(flags[key][-1]) == json.loads(instruction["value"])


def test_the_chroot_runs_the_dockerfiles_script() -> None:
    builder = (support.CLUSTER / "podseg-image.sh").read_text()
    assert "sh /tmp/podseg-src/scripts/image/build-rootfs.sh /tmp/podseg-src" in builder
    assert "debootstrap --variant=minbase" in builder
    assert "sh /src/scripts/image/build-rootfs.sh /src" in DOCKERFILE.read_text()
