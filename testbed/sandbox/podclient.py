"""The sandbox's handle on one running pod process (`testbed.sandbox.podproc`).

Starting the process inside its namespace, waiting for its ready line, exchanging JSON lines
with deadlines and stopping it are kept here so the topology code deals in namespaces and
addresses only, and the prober in probe batches only.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pathlib
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, cast

import testbed

# The directory that holds the `testbed` package, so the child (started with `python -S`, which
# skips site-packages and so any editable install) finds it whatever its cwd.
_SOURCE_ROOT = str(pathlib.Path(testbed.__file__).resolve().parent.parent)
READY_TIMEOUT = 20.0
_STOP_TIMEOUT = 5.0


class PodProcessError(RuntimeError):
    """The pod process died, misbehaved or did not answer in time."""


class PodProcess:
    """One `podproc` running inside a pod's network namespace, with a line-JSON channel."""

    def __init__(self, popen: subprocess.Popen[bytes], name: str, log_path: pathlib.Path) -> None:
        self._popen = popen
        self.name = name
        self.log_path = log_path
        self._buffer = b""
        self._pending: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._receive_lock = threading.Lock()

    @classmethod
    def start(
        cls,
        netns: str,
        name: str,
        ports: Sequence[int],
        log_path: pathlib.Path,
        echo_ports: Sequence[int] = (),
    ) -> PodProcess:
        """Start the pod process inside `netns`; do not wait for it (see `wait_ready`)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_SOURCE_ROOT, env.get("PYTHONPATH", "")) if p
        )
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        command = [
            "ip",
            "netns",
            "exec",
            netns,
            sys.executable,
            "-S",  # stdlib only: skips site-packages processing, ~20 ms faster to start
            "-m",
            "testbed.sandbox.podproc",
            "--name",
            name,
            "--ports",
            ",".join(str(port) for port in ports),
            *(["--echo-ports", ",".join(str(port) for port in echo_ports)] if echo_ports else []),
        ]
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                start_new_session=True,  # a terminal's Ctrl-C goes to the caller, who cleans up
            )
        return cls(popen, name, log_path)

    @property
    def pid(self) -> int:
        """The pid of the Python process inside the namespace (`ip netns exec` execs it)."""
        return self._popen.pid

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self._popen.poll() is None

    def new_id(self) -> str:
        """Return a request id unique for this process."""
        return f"r{next(self._ids)}"

    def send(self, message: dict[str, Any]) -> None:
        """Write one command line; raise PodProcessError if the process is gone."""
        stdin = self._popen.stdin
        if stdin is None:
            raise PodProcessError(f"pod process {self.name} has no stdin")
        data = (json.dumps(message) + "\n").encode()
        with self._send_lock:
            try:
                stdin.write(data)
                stdin.flush()
            except (BrokenPipeError, ValueError) as exc:
                raise PodProcessError(self._describe(f"cannot write: {exc}")) from exc

    def receive(self, request_id: str, deadline: float) -> dict[str, Any]:
        """Return the answer to `request_id`, waiting until `deadline` (time.monotonic())."""
        with self._receive_lock:
            while True:
                answer = self._pending.pop(request_id, None)
                if answer is not None:
                    return answer
                self._read_some(deadline)

    def request(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send `message` with a fresh id and return the answer."""
        request_id = self.new_id()
        self.send({**message, "id": request_id})
        return self.receive(request_id, time.monotonic() + timeout)

    def wait_ready(self, deadline: float) -> dict[str, Any]:
        """Wait for the start-up ready line (sent once every server listens)."""
        return self.receive("ready", deadline)

    def _read_some(self, deadline: float) -> None:
        stdout = self._popen.stdout
        if stdout is None:
            raise PodProcessError(f"pod process {self.name} has no stdout")
        fd = stdout.fileno()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PodProcessError(self._describe("no answer before the deadline"))
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            raise PodProcessError(self._describe("no answer before the deadline"))
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            self._popen.poll()
            raise PodProcessError(self._describe("exited"))
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                message = cast(dict[str, Any], json.loads(line))
            except ValueError as exc:
                raise PodProcessError(self._describe(f"bad output line {line!r}")) from exc
            self._pending[str(message.get("id"))] = message

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after `timeout`) and reap it."""
        self.signal_stop()
        self.wait_stopped(time.monotonic() + timeout)

    def signal_stop(self) -> None:
        """Ask the process to exit (closing stdin and sending SIGTERM); do not wait."""
        if self._popen.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                self._popen.stdin.close()
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(signal.SIGTERM)

    def wait_stopped(self, deadline: float) -> None:
        """Reap the process, killing it if it is still there at `deadline`."""
        try:
            self._popen.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait(timeout=_STOP_TIMEOUT)
        if self._popen.stdout is not None:
            self._popen.stdout.close()

    def _describe(self, problem: str) -> str:
        status = self._popen.poll()
        state = "running" if status is None else f"exit status {status}"
        try:
            log = self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            log = ""
        return f"pod process {self.name} (pid {self.pid}, {state}): {problem}; log: {log!r}"
