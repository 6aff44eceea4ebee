"""Fixtures: the API emulator, pods in it, and a running responder (its real aiohttp server in
a thread, the real `kubernetes` client inside) configured per test."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes.client
import pytest

from agent.responder import app, findings, settings, severity
from testbed.emulator import server
from tests.support import apiclient
from tests.support.responder import PAYMENTS_API, SHOP_WEB, TOKEN, RunningResponder, Start


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


@pytest.fixture
def start_responder(emulator: server.EmulatorThread, tmp_path: pathlib.Path) -> Iterator[Start]:
    """start_responder(min_severity=..., rules=..., dry_run=..., clock=..., **settings) ->
    running service; other keywords are `settings.Settings` fields."""
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
        **overrides: Any,
    ) -> RunningResponder:
        config = settings.Settings(
            token_file=str(token_file),
            kubeconfig=str(kubeconfig),
            host="127.0.0.1",
            port=0,
            policy=findings.Policy(severity.threshold(min_severity), rules),
            dry_run=dry_run,
            **overrides,
        )
        responder = app.build(config, clock=clock)
        running.append(RunningResponder(responder))
        return running[-1]

    yield start
    for r in running:
        r.stop()
