"""Kubeconfig files pointing the official client at an emulator.

Written as JSON (valid YAML, so the client's YAML loader reads it) and atomically renamed
into place, so a process polling for the file never sees half of it.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

NAME = "podseg-emulator"
TOKEN = "podseg-emulator-token"


def render(url: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": NAME, "cluster": {"server": url}}],
        "users": [{"name": NAME, "user": {"token": TOKEN}}],
        "contexts": [
            {"name": NAME, "context": {"cluster": NAME, "user": NAME, "namespace": namespace}}
        ],
        "current-context": NAME,
        "preferences": {},
    }


def write(path: str, url: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".kubeconfig-", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(render(url), handle, indent=2)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
