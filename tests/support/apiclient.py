"""The official `kubernetes` client against the API emulator: a client from the kubeconfig the
emulator writes, object builders, raw requests, and a background watch recorder."""

from __future__ import annotations

import json
import pathlib
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import kubernetes.client
import kubernetes.config
import kubernetes.watch

from testbed.emulator import server


def client_for(emu: server.EmulatorThread, directory: pathlib.Path) -> kubernetes.client.ApiClient:
    """An official-client ApiClient configured from a kubeconfig the emulator wrote."""
    path = directory / f"kubeconfig-{emu.emulator.port}"
    emu.write_kubeconfig(str(path))
    return kubernetes.config.new_client_from_config(config_file=str(path))


def pod(name: str, labels: dict[str, str] | None = None, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "nginx:1.27"}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def netpol(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def status_of(exc: kubernetes.client.ApiException) -> dict[str, Any]:
    body = json.loads(exc.body)
    assert isinstance(body, dict)
    return body


def raw_request(
    emu: server.EmulatorThread, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    """Plain HTTP, for bodies the official client refuses to send (it validates models)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(emu.url + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class WatchRecorder:
    """Runs ``Watch().stream(fn, **kwargs)`` in a thread and records (type, name, raw) tuples."""

    def __init__(self, emu: server.EmulatorThread, fn: Callable[..., Any], **kwargs: Any) -> None:
        self.events: queue.Queue[tuple[str, str, dict[str, Any]] | None] = queue.Queue()
        self.error: BaseException | None = None
        self._watch = kubernetes.watch.Watch()
        kwargs.setdefault("timeout_seconds", 10)
        kwargs.setdefault("_request_timeout", 15)
        before = emu.watch_count
        self._thread = threading.Thread(target=self._run, args=(fn, kwargs), daemon=True)
        self._thread.start()
        # The server registers the watcher before it answers, so this means "watching".
        wait_for(lambda: emu.watch_count > before or not self._thread.is_alive(), what="watch")

    def _run(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        try:
            for event in self._watch.stream(fn, **kwargs):
                raw = event["raw_object"]
                name = str(raw.get("metadata", {}).get("name", ""))
                self.events.put((event["type"], name, raw))
        except BaseException as exc:
            self.error = exc
        finally:
            self.events.put(None)

    def take(self, count: int, timeout: float = 5.0) -> list[tuple[str, str, dict[str, Any]]]:
        out: list[tuple[str, str, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"only {len(out)} of {count} events: {out}")
            try:
                item = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if item is None:
                raise AssertionError(f"stream ended after {out} (error: {self.error!r})")
            out.append(item)
        return out

    def stop(self) -> None:
        self._watch.stop()

    def join(self, timeout: float = 15.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "watch thread did not finish"
