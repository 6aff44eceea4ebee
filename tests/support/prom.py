"""A real Prometheus server for e2e tests: 127.0.0.1 only, ephemeral port, temp storage.

It scrapes the agents' `/metrics` every second; tests read series through its HTTP API.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from tests.support.polling import wait_for

BINARY = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def available() -> bool:
    return pathlib.Path(BINARY).is_file() and pathlib.Path(PROMTOOL).is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    def __init__(self, targets: Sequence[str]) -> None:
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix="psg-prom-"))
        self.port = _free_port()
        config = self.workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: podseg\n    scrape_interval: 1s\n"
            "    static_configs:\n      - targets: [" + ", ".join(f'"{t}"' for t in targets) + "]\n"
        )
        self.log = open(self.workdir / "prometheus.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                BINARY,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of `expr` (empty when absent or when Prometheus is not up yet)."""
        try:
            answer = self.get("/api/v1/query", query=expr)
        except OSError:
            return []
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_up(self, timeout: float = 30.0) -> None:
        wait_for(
            lambda: self.value("min(up)") == 1.0,
            timeout=timeout,
            interval=0.2,
            what="prometheus scraping every agent",
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
