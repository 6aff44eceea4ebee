"""``python -m testbed.emulator`` as a subprocess: prints its URL first, serves, exits on TERM."""

from __future__ import annotations

import os
import pathlib
import queue
import subprocess
import sys
import threading

import kubernetes.client
import kubernetes.config

REPO = pathlib.Path(__file__).resolve().parents[3]


def test_module_entry_point(tmp_path: pathlib.Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "testbed.emulator", "--port", "0", "--kubeconfig", str(kubeconfig)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
        url = lines.get(timeout=20).strip()
        assert url.startswith("http://127.0.0.1:"), url
        assert kubeconfig.exists()  # written before the URL is printed
        client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        core = kubernetes.client.CoreV1Api(client)
        assert client.configuration.host == url
        names = [n.metadata.name for n in core.list_namespace().items]
        assert {"default", "kube-system", "kube-public"} <= set(names)
        core.create_namespaced_pod(
            "default",
            {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
        )
        assert [p.metadata.name for p in core.list_namespaced_pod("default").items] == ["p"]
        client.close()
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
