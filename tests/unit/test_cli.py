"""`podseg agent` refuses to start with a clear message and exit code 2 on bad settings;
`podseg demo` runs the testbed demo, or says where it ships when only the runtime is installed."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

import agent


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("NODE_NAME", "KUBECONFIG")}
    base.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run(
        [sys.executable, "-m", "agent", "agent", *args],
        capture_output=True,
        text=True,
        env=base | (env or {}),
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "--node-name (or NODE_NAME) is required"),
        (("--node-name", "n", "--backend", "ebpf"), "--backend 'ebpf'"),
        (("--node-name", "n", "--kubeconfig", "/nonexistent"), "cannot load API credentials"),
        (("--node-name", "n"), "in-cluster service account"),
    ],
)
def test_bad_settings_exit_2_with_a_message(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_without_the_testbed_says_where_it_ships(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`podseg demo` is test tooling (podseg-testbed); the runtime alone answers in one line."""
    from agent import cli

    monkeypatch.setitem(sys.modules, "testbed", None)  # None: import fails as if not installed
    monkeypatch.setitem(sys.modules, "testbed.demo", None)
    assert cli.main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "podseg demo: the demo ships with the podseg-testbed package"
        " (bash scripts/demo.sh installs it)"
    ]


def test_demo_runs_the_testbed_demo_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent import cli
    from testbed import demo

    monkeypatch.setattr(demo, "main", lambda: 7)
    assert cli.main(["demo"]) == 7


def test_version_is_printed_and_a_bad_variable_exits_2_without_a_traceback() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "agent", "--version"], capture_output=True, text=True, check=False
    )
    assert shown.returncode == 0 and shown.stdout.strip() == f"podseg {agent.version()}"
    helped = run("--help", env={"PODSEG_RESYNC_PERIOD": "abc"})
    assert helped.returncode == 0  # --help answers whatever the environment says
    bad = run("--node-name", "n", env={"PODSEG_RESYNC_PERIOD": "abc"})
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "podseg agent: PODSEG_RESYNC_PERIOD 'abc': could not convert string to float: 'abc'"
    ]


def test_explain_answers_clear_errors_without_a_cluster(tmp_path: pathlib.Path) -> None:
    missing = subprocess.run(
        [sys.executable, "-m", "agent", "explain", "x/a", "x/b", "--kubeconfig", "/nonexistent"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2
    assert missing.stderr.startswith("podseg explain: cannot load API credentials")
    assert "Traceback" not in missing.stderr
