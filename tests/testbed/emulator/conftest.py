"""Fixtures: a running emulator per test plus official-client API objects pointed at it."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import kubernetes.client
import pytest

from testbed.emulator import server
from tests.support import apiclient

EmulatorFactory = Callable[..., server.EmulatorThread]


@pytest.fixture
def make_emulator(request: pytest.FixtureRequest) -> EmulatorFactory:
    """Start an EmulatorThread with the given kwargs; it is stopped when the test ends."""

    def make(**kwargs: Any) -> server.EmulatorThread:
        kwargs.setdefault("bookmark_interval", 0.2)
        emu = server.EmulatorThread(**kwargs)
        emu.start()
        request.addfinalizer(emu.stop)
        return emu

    return make


@pytest.fixture
def emulator(make_emulator: EmulatorFactory) -> server.EmulatorThread:
    return make_emulator()


@pytest.fixture
def api_client(
    emulator: server.EmulatorThread, tmp_path: pathlib.Path, request: pytest.FixtureRequest
) -> kubernetes.client.ApiClient:
    client = apiclient.client_for(emulator, tmp_path)
    request.addfinalizer(client.close)
    return client


@pytest.fixture
def core(api_client: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client)


@pytest.fixture
def net(api_client: kubernetes.client.ApiClient) -> kubernetes.client.NetworkingV1Api:
    return kubernetes.client.NetworkingV1Api(api_client)


@pytest.fixture
def disc(api_client: kubernetes.client.ApiClient) -> kubernetes.client.DiscoveryV1Api:
    return kubernetes.client.DiscoveryV1Api(api_client)
