"""`podseg cleanup` run as a process over a private `--netns-dir` with `--no-proc-scan`, so it
can only reach the namespaces a test linked there; `caps` narrows its bounding set."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys


def run_cleanup(
    netns_dir: pathlib.Path, *extra: str, caps: str | None = None
) -> subprocess.CompletedProcess[str]:
    prefix = ("setpriv", f"--bounding-set={caps}") if caps else ()
    return subprocess.run(
        [
            *prefix,
            *(sys.executable, "-m", "agent", "cleanup", "--netns-dir", str(netns_dir)),
            *("--no-proc-scan", "--log-format", "console", *extra),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[2])},
    )
