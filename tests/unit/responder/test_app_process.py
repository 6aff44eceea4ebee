"""`podseg responder` as a real process: bad settings exit 2 with a message; a good one serves a
finding end to end against the emulator and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import kubernetes.client
import pytest

from testbed.emulator import server
from tests.support import responder as harness
from tests.support.responder import SHOP_WEB, TOKEN, pod_meta


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "responder", *args],
        capture_output=True,
        text=True,
        env=harness.clean_env(),
        timeout=60,
        check=False,
    )


@pytest.fixture
def token_file(tmp_path: pathlib.Path) -> str:
    path = tmp_path / "token"
    path.write_text(TOKEN)
    return str(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "--token-file (or PODSEG_RESPONDER_TOKEN_FILE) is required"),
        (("--token-file", "/nonexistent/token"), "cannot read --token-file /nonexistent/token"),
        (("--min-severity", "urgent"), "--min-severity: unknown severity 'urgent'"),
        (("--min-severity", "none"), "--min-severity none needs --rules"),
        (("--listen-address", "8080"), "--listen-address '8080': expected host:port"),
        (("--log-format", "xml"), "--log-format 'xml'"),
        (("--kubeconfig", "/nonexistent"), "cannot load API credentials from /nonexistent"),
        ((), "in-cluster service account"),
    ],
)
def test_bad_settings_exit_2_with_a_message(
    token_file: str, args: tuple[str, ...], message: str
) -> None:
    if "--token-file" not in args and "required" not in message:
        args = ("--token-file", token_file, *args)
    result = _run(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_empty_token_file_is_refused(tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    result = _run("--token-file", str(empty))
    assert result.returncode == 2 and "is empty" in result.stderr


def test_the_process_quarantines_a_pod_and_stops_on_sigterm(
    core: kubernetes.client.CoreV1Api, emulator: server.EmulatorThread, tmp_path: pathlib.Path
) -> None:
    kubeconfig = tmp_path / "kc"
    emulator.write_kubeconfig(str(kubeconfig))
    responder = harness.ResponderProcess(str(kubeconfig), tmp_path, "--min-severity", "error")
    try:
        assert responder.started["min_severity"] == "error"
        assert responder.started["dry_run"] is False
        status, answer = responder.post("falco", harness.load("falco_drop_and_execute"))
        assert status == 200 and answer["outcome"] == "quarantined"
        assert pod_meta(core, SHOP_WEB).labels["podseg.io/quarantine"] == "true"
        audit = responder.wait_for_event("responder.decision")
        assert audit["outcome"] == "quarantined" and audit["pod"] == SHOP_WEB[1]
        assert responder.token not in json.dumps(audit)
        status, answer = responder.post("falco", harness.load("falco_drop_and_execute"))
        assert status == 200 and answer["outcome"] == "unchanged"
    finally:
        code = responder.stop()
    assert code == 0
