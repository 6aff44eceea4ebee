"""`podseg responder` as a real process: bad settings exit 2 with a message; a good one serves a
finding end to end against the emulator and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import pathlib
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import kubernetes.client
import pytest

from agent.emulator import server
from tests.responder import payloads
from tests.responder.conftest import SHOP_WEB, TOKEN, pod_meta


def _env() -> dict[str, str]:
    drop = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {k: v for k, v in env.items() if not k.startswith("PODSEG_")}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "responder", *args],
        capture_output=True,
        text=True,
        env=_env(),
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
    core: kubernetes.client.CoreV1Api,
    emulator: server.EmulatorThread,
    tmp_path: pathlib.Path,
    token_file: str,
) -> None:
    kubeconfig = tmp_path / "kc"
    emulator.write_kubeconfig(str(kubeconfig))
    env = _env() | {
        "PODSEG_RESPONDER_TOKEN_FILE": token_file,
        "PODSEG_RESPONDER_LISTEN_ADDRESS": "127.0.0.1:0",
        "PODSEG_RESPONDER_MIN_SEVERITY": "error",
        "KUBECONFIG": str(kubeconfig),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "responder"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr or []], daemon=True)
    reader.start()
    try:
        started = _wait_for_event(lines, "responder.started")
        assert started["min_severity"] == "error" and started["dry_run"] is False
        request = urllib.request.Request(
            f"http://127.0.0.1:{started['port']}/findings/falco",
            data=json.dumps(payloads.load("falco_drop_and_execute")).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=20) as response:
            assert response.status == 200
            assert json.loads(response.read())["outcome"] == "quarantined"
        assert pod_meta(core, SHOP_WEB).labels["podseg.io/quarantine"] == "true"
        audit = _wait_for_event(lines, "responder.decision")
        assert audit["outcome"] == "quarantined" and audit["pod"] == SHOP_WEB[1]
        assert TOKEN not in json.dumps(audit)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _wait_for_event(
    lines: queue.Queue[str], event: str, timeout: float = 30.0
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == event:
            return record
    raise AssertionError(f"no {event} log line within {timeout}s")
