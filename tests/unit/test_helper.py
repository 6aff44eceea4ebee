"""The helper process (`agent.helper`) over its pipes, without root: each request goes to the
part it names and each answer says which part it comes from; a request for no known part is
refused and the helper stays up; a part that raises ends the whole helper (status 1), after a
line naming that part, so that the other part never runs on alone."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from agent import helper
from tests.support import helperproc


def talk(
    requests: list[dict[str, Any]], *argv: str, env: dict[str, str] | None = None
) -> tuple[int, list[dict[str, Any]], str]:
    """Run the helper (or `argv`) with these request lines, as the agent starts it (or with
    `env`); its status, lines and stderr."""
    command = list(argv) or [sys.executable, "-m", "agent.helper"]
    result = subprocess.run(
        command,
        input="".join(json.dumps(r) + "\n" for r in requests),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env if env is not None else helperproc.helper_env(),
    )
    return (
        result.returncode,
        [json.loads(line) for line in result.stdout.splitlines()],
        result.stderr,
    )


def test_requests_go_to_the_part_they_name_and_answers_say_which() -> None:
    missing = "/nonexistent/psg-helper-test"
    code, lines, _ = talk(
        [
            {"op": "open", "part": "drops", "key": "x/a", "path": missing, "ino": 1},
            {"op": "open", "part": "changes", "key": "x/b", "path": missing, "ino": 1},
            {"op": "open", "part": "nosuch", "key": "x/c", "path": missing, "ino": 1},
            {"op": "open", "key": "x/d", "path": missing, "ino": 1},
        ]
    )
    assert code == 0  # served until its stdin closed
    assert [(m["part"], m["key"]) for m in lines] == [
        ("drops", "x/a"),
        ("changes", "x/b"),
        ("", ""),
        ("", ""),
    ]
    assert all(m["error"].startswith("open: ") for m in lines[:2])
    assert "unknown part 'nosuch'" in lines[2]["error"] and "None" in lines[3]["error"]


def test_a_failing_part_ends_the_whole_helper_and_is_named() -> None:
    request = {"op": "close", "key": "x/a"}
    code, lines, stderr = talk(
        [
            {**request, "part": "drops"},
            {**request, "part": "changes"},
            {**request, "part": "drops"},
        ],
        sys.executable,
        "-c",
        helperproc.BROKEN_CHANGES,
    )
    assert code == 1
    assert lines == [{"part": "changes", "failed": "changes: RuntimeError: broken on purpose"}]
    assert "broken on purpose" in stderr  # the traceback, for the agent's log


def test_without_the_agents_nflog_group_the_helper_does_not_start() -> None:
    env = {k: v for k, v in helperproc.helper_env().items() if k != helper.NFLOG_GROUP_ENV}
    code, lines, stderr = talk([], env=env)
    assert code == 2 and lines == [] and helper.NFLOG_GROUP_ENV in stderr
