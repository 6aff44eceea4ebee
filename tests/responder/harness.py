"""A real `podseg responder` process for tests (the e2e chain test reuses it): started on
127.0.0.1 with an ephemeral port read from its `responder.started` log line, fed findings over
HTTP, stopped with SIGTERM."""

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
import urllib.error
import urllib.request
from typing import Any

TOKEN = "s3cr3t-t0ken-for-tests-only"


def clean_env() -> dict[str, str]:
    drop = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PODSEG_")}


class ResponderProcess:
    def __init__(
        self, kubeconfig: str, directory: pathlib.Path, *args: str, token: str = TOKEN
    ) -> None:
        token_file = directory / "responder-token"
        token_file.write_text(token + "\n")
        self.token = token
        env = clean_env() | {
            "PODSEG_RESPONDER_TOKEN_FILE": str(token_file),
            "PODSEG_RESPONDER_LISTEN_ADDRESS": "127.0.0.1:0",
            "KUBECONFIG": kubeconfig,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "responder", *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self.started = self.wait_for_event("responder.started")
        except BaseException:
            self.stop()
            raise
        self.port = int(str(self.started["port"]))

    def _read(self) -> None:
        for line in self.proc.stderr or []:
            self.lines.put(line)

    def wait_for_event(self, event: str, timeout: float = 30.0) -> dict[str, Any]:
        """The next JSON log record named `event` (earlier records are consumed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == event:
                return record
        raise AssertionError(f"no {event} log line within {timeout}s (exit: {self.proc.poll()})")

    def post(self, source: str, payload: Any) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/findings/{source}",
            data=json.dumps(payload).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait; kill if it does not stop. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise
        return int(self.proc.returncode)
