"""Fixtures: the API emulator, pods in it, and a running responder (its real aiohttp server in
a thread, the real `kubernetes` client inside) configured per test."""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import pathlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes.client
import pytest

from agent import metrics
from agent.responder import app, findings, settings, severity
from testbed.emulator import server
from tests.responder import harness
from tests.support import apiclient

TOKEN = harness.TOKEN
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
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def post(
        self, source: str, payload: Any, *, token: str | None = TOKEN, raw: bytes | None = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else json.dumps(payload).encode()
        status, _, body = self.request("POST", f"/findings/{source}", data, headers)
        return status, json.loads(body)

    def post_many(self, source: str, payload: Any, count: int) -> list[tuple[int, dict[str, Any]]]:
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            return list(pool.map(lambda _: self.post(source, payload), range(count)))

    def stop(self) -> None:
        self._call(self.responder.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> server.EmulatorThread:
    emu = server.EmulatorThread()
    emu.start()
    request.addfinalizer(emu.stop)
    return emu


@pytest.fixture
def core(
    emulator: server.EmulatorThread, tmp_path: pathlib.Path, request: pytest.FixtureRequest
) -> kubernetes.client.CoreV1Api:
    client = apiclient.client_for(emulator, tmp_path)
    request.addfinalizer(client.close)
    api = kubernetes.client.CoreV1Api(client)
    for namespace, name in (SHOP_WEB, PAYMENTS_API):
        api.create_namespace({"metadata": {"name": namespace}})
        pod = apiclient.pod(name, {"app": name.split("-")[0]}, node="node-1")
        api.create_namespaced_pod(namespace, pod)
    return api


Start = Callable[..., RunningResponder]


@pytest.fixture
def start_responder(emulator: server.EmulatorThread, tmp_path: pathlib.Path) -> Iterator[Start]:
    """start_responder(min_severity=..., rules=..., dry_run=..., clock=...) -> running service."""
    running: list[RunningResponder] = []
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    kubeconfig = tmp_path / "responder-kubeconfig"
    emulator.write_kubeconfig(str(kubeconfig))

    def start(
        *,
        min_severity: str = "critical",
        rules: frozenset[str] = frozenset(),
        dry_run: bool = False,
        clock: Callable[[], Any] | None = None,
    ) -> RunningResponder:
        config = settings.Settings(
            token_file=str(token_file),
            kubeconfig=str(kubeconfig),
            host="127.0.0.1",
            port=0,
            policy=findings.Policy(severity.threshold(min_severity), rules),
            dry_run=dry_run,
        )
        responder = app.build(config, clock=clock)
        running.append(RunningResponder(responder))
        return running[-1]

    yield start
    for r in running:
        r.stop()


def count(source: str, outcome: str) -> float:
    value = metrics.RESPONDER_REGISTRY.get_sample_value(
        "podseg_responder_findings_total", {"source": source, "outcome": outcome}
    )
    return value or 0.0


def pod_meta(core: kubernetes.client.CoreV1Api, key: tuple[str, str]) -> Any:
    return core.read_namespaced_pod(key[1], key[0]).metadata
