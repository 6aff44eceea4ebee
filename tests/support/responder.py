"""The responder under test: sample webhook bodies (payloads/, shaped on the public
Falco/falcosidekick and Wiz formats), a `Responder` served in this process by a private event
loop thread (`RunningResponder`), and a real `podseg responder` process (`ResponderProcess`):
started on 127.0.0.1 with an ephemeral port read from its `responder.started` log line, fed
findings over HTTP, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http.client
import json
import os
import pathlib
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes.client
import structlog.testing

from agent import metrics
from agent.responder import app

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


PAYLOADS = pathlib.Path(__file__).with_name("payloads")


def load(name: str) -> Any:
    """The sample webhook body payloads/<name>.json."""
    return json.loads((PAYLOADS / f"{name}.json").read_text())


SHOP_WEB = ("shop", "web-7d9f8b6c5-x2k4p")


PAYMENTS_API = ("payments", "api-5b6c7d8f9-qr7tz")


class RunningResponder:
    """A `Responder` served on 127.0.0.1:<ephemeral> by a private event loop thread."""

    def __init__(self, responder: app.Responder) -> None:
        self.responder = responder
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._call(responder.start())
        self.port = responder.port

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        client: str | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a new connection, from the loopback address `client` if given."""
        bind = (client, 0) if client else None
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20, source_address=bind)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def post(
        self,
        source: str,
        payload: Any,
        *,
        token: str | None = TOKEN,
        raw: bytes | None = None,
        client: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        status, _, answer = self.post_full(source, payload, token=token, raw=raw, client=client)
        return status, answer

    def post_full(
        self,
        source: str,
        payload: Any,
        *,
        token: str | None = TOKEN,
        raw: bytes | None = None,
        client: str | None = None,
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        """POST a finding: status, headers, the JSON answer."""
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else json.dumps(payload).encode()
        status, got, body = self.request("POST", f"/findings/{source}", data, headers, client)
        return status, got, json.loads(body)

    def raw(self, data: bytes, timeout: float = 20.0) -> bytes:
        """Send `data` as is on a new connection; everything the server answers until it
        closes (send `Connection: close`)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(data)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    def post_many(self, source: str, payload: Any, count: int) -> list[tuple[int, dict[str, Any]]]:
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            return list(pool.map(lambda _: self.post(source, payload), range(count)))

    def stop(self) -> None:
        self._call(self.responder.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


Start = Callable[..., RunningResponder]


def count(source: str, outcome: str) -> float:
    value = metrics.RESPONDER_REGISTRY.get_sample_value(
        "podseg_responder_findings_total", {"source": source, "outcome": outcome}
    )
    return value or 0.0


class Audit:
    """The log records captured while an `audit()` block runs, from any thread."""

    def __init__(self, records: list[Any]) -> None:
        self.records = records

    def decisions(self) -> list[dict[str, Any]]:
        """The audit lines (`responder.decision`) so far, in order."""
        return [dict(r) for r in list(self.records) if r.get("event") == "responder.decision"]


@contextlib.contextmanager
def audit() -> Iterator[Audit]:
    with structlog.testing.capture_logs() as records:
        yield Audit(records)


def pod_meta(core: kubernetes.client.CoreV1Api, key: tuple[str, str]) -> Any:
    return core.read_namespaced_pod(key[1], key[0]).metadata
