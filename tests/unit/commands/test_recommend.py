"""`podseg recommend` as a user runs it: YAML on stdout that loads as NetworkPolicies (and can
be fed back to `podseg whatif`), notes on stderr, one line with exit 2 for bad input."""

from __future__ import annotations

import pathlib
import shlex
import subprocess
import sys

import yaml

from tests.support import flowgraphs as fg

FLOWS = str(fg.SHOP)


def test_yaml_of_network_policies(tmp_path: pathlib.Path) -> None:
    done = fg.podseg("recommend", "-n", "shop", "--flows", FLOWS)
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d is not None]
    assert [d["metadata"]["name"] for d in docs] == [
        "cart-observed",
        "catalog-observed",
        "db-observed",
        "debug-shell-observed",
        "frontend-observed",
    ]
    assert {(d["apiVersion"], d["kind"], d["metadata"]["namespace"]) for d in docs} == {
        ("networking.k8s.io/v1", "NetworkPolicy", "shop")
    }
    assert done.stdout.startswith("# podseg recommend -n shop: traffic seen from 2026-12-01")
    candidate = tmp_path / "shop.yaml"
    candidate.write_text(done.stdout)
    replayed = fg.podseg("whatif", str(candidate), "--flows", FLOWS)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "0 that pass now would be dropped" in replayed.stdout


def test_bad_input() -> None:
    done = fg.podseg("recommend", "-n", "nope", "--flows", FLOWS)
    line = fg.one_line_error(done, "recommend")
    assert "no namespace 'nope'" in line and "shop" in line
    assert done.stdout == ""


def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    """`true` exits before podseg writes: every write meets a closed pipe."""
    command = f"{shlex.quote(sys.executable)} -m agent recommend -n shop --flows {FLOWS} | true"
    done = subprocess.run(
        ["bash", "-c", command + '; echo "${PIPESTATUS[0]}"'],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=fg.ROOT,
    )
    assert done.stdout.strip() == "1"
    assert done.stderr == ""
