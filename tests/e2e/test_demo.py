"""`podseg demo`, as README's first command runs it: every step's live probes match what the
policies mean (NetworkPolicy, the admin tiers, a Service, and visibility -> recommend ->
enforce), and the sandbox is gone afterwards."""

from __future__ import annotations

import subprocess
import sys

from tests.support.kernel import run


def _psg_namespaces() -> set[str]:
    return {
        line.split()[0]
        for line in run("ip", "netns", "list").splitlines()
        if line.startswith("psg-")
    }


def test_the_demo_runs_without_surprises() -> None:
    before = _psg_namespaces()
    done = subprocess.run(
        [sys.executable, "-m", "agent", "demo"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "; 0 unexpected matrices" in done.stdout
    assert "recommended: back-observed, front-observed, jump-observed" in done.stdout
    assert "enforced: jump -> back:80 (new peer)       timeout" in done.stdout
    assert _psg_namespaces() <= before
