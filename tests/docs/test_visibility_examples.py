"""docs/visibility.md shows real output: every `console` block's commands are run as written
(from a directory holding the repository's docs/) and print what the page says (a `...` line
ends the part shown), and the committed map picture is the size the layout gives today."""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import struct
import subprocess
import sys

import pytest

from agent.flows import draw, layout
from tests.support import flowgraphs as fg

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "visibility.md"
BLOCK = re.compile(r"```console\n(.*?)```", re.DOTALL)


def _sessions() -> list[list[tuple[str, list[str]]]]:
    """Each block as (command, expected output lines) pairs."""
    out = []
    for block in BLOCK.findall(PAGE.read_text()):
        steps: list[tuple[str, list[str]]] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                steps[-1][1].append(line)
        out.append(steps)
    return out


def _run(command: str, cwd: pathlib.Path) -> str:
    words = shlex.split(command)
    assert words[0] == "podseg", command
    target = None
    if ">" in words:
        words, target = words[: words.index(">")], words[words.index(">") + 1]
    done = subprocess.run(
        [sys.executable, "-m", "agent", *words[1:]],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode in (0, 1), done.stderr
    if target is not None:
        (cwd / target).write_text(done.stdout)
        return done.stderr
    return done.stdout + done.stderr


SESSIONS = _sessions()


def test_the_page_has_examples() -> None:
    commands = [c.split()[1] for steps in SESSIONS for c, _ in steps]
    assert {"map", "recommend", "whatif"} <= set(commands)


@pytest.mark.parametrize("steps", SESSIONS, ids=lambda s: s[-1][0][:60])
def test_console_blocks_show_real_output(
    steps: list[tuple[str, list[str]]], tmp_path: pathlib.Path
) -> None:
    (tmp_path / "docs").symlink_to(ROOT / "docs")
    for command, expected in steps:
        got = _run(command, tmp_path).splitlines()
        if "..." in expected:
            shown = expected[: expected.index("...")]
            assert got[: len(shown)] == shown, command
            assert len(got) > len(shown)
        else:
            assert got == expected, command


def test_the_committed_map_matches_the_layout() -> None:
    data = (ROOT / "docs" / "images" / "map.png").read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    lay = layout.layout(fg.shop())
    assert abs(width - max(lay.width, 560)) <= 1
    assert abs(height - (lay.height + draw.LEGEND_H)) <= 1
    assert "images/map.png" in PAGE.read_text()
