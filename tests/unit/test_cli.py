"""`podseg agent` refuses to start with a clear message and exit code 2 on bad settings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


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
