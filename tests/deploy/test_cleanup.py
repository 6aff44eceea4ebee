"""`podseg cleanup` against the real kernel: lists owned tables, removes them, nothing else.

The namespaces are made here (named `psg-*`) and reached only through a private `--netns-dir`
of symlinks with `--no-proc-scan`, so the command can never reach another test run's
namespaces on the same machine. A link to the host namespace (`/proc/1/ns/net`) sits in that
directory too: the worker must skip it, and the test never writes any rule there.
"""

from __future__ import annotations

import pathlib
import secrets
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from agent.calc import ruleset
from agent.dataplane.nft import render as render_nft
from tests.support import privilege
from tests.support.cleanup import run_cleanup

pytestmark = privilege.requires_root

FOREIGN = "table inet foreign { chain c { type filter hook input priority 10; }; }\n" + (
    "table ip podseg { chain c { type filter hook input priority 20; }; }\n"
)


def _run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def _tables(name: str) -> set[str]:
    out = _run("ip", "netns", "exec", name, "nft", "list", "tables")
    return {line.removeprefix("table ").strip() for line in out.splitlines() if line.strip()}


def _isolated_both_ways(pod: str) -> ruleset.PodRuleset:
    return ruleset.PodRuleset(
        namespace="shop",
        pod=pod,
        ingress=ruleset.DirectionRuleset(isolated=True, policies=("shop/deny",)),
        egress=ruleset.DirectionRuleset(isolated=True, policies=("shop/deny",)),
    )


def _nft(name: str, script: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", name, "nft", "-f", "-"],
        input=script,
        check=True,
        capture_output=True,
        text=True,
    )


@pytest.fixture
def node(tmp_path: pathlib.Path) -> Iterator[tuple[pathlib.Path, list[str]]]:
    """Three pod namespaces: two programmed by "the agent" (+ foreign tables), one untouched."""
    run = secrets.token_hex(3)
    names = [f"psg-{run}-cl{i}" for i in range(3)]
    netns_dir = tmp_path / "netns"
    netns_dir.mkdir()
    try:
        for name in names:
            _run("ip", "netns", "add", name)
            _run("ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
            _run("ip", "-n", name, "link", "set", "eth0", "up")
            (netns_dir / name).symlink_to(f"/run/netns/{name}")
        (netns_dir / "host").symlink_to("/proc/1/ns/net")
        for name in names[:2]:
            _nft(name, render_nft.render(_isolated_both_ways(name), ["eth0"]).script)
            _nft(name, FOREIGN)
        yield netns_dir, names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def test_dry_run_lists_then_cleanup_removes_only_owned_tables(
    node: tuple[pathlib.Path, list[str]],
) -> None:
    netns_dir, names = node
    owned = {"inet podseg", "netdev podseg"}
    foreign = {"inet foreign", "ip podseg"}
    for name in names[:2]:
        assert _tables(name) == owned | foreign

    dry = run_cleanup(netns_dir, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    listed = [line for line in dry.stdout.splitlines() if line.startswith("would remove: ")]
    assert sorted(line.split()[2] for line in listed) == sorted(
        str(netns_dir / name) for name in names[:2]
    )
    assert all("tables=inet podseg+netdev podseg" in line for line in listed)
    # 3 pod namespaces scanned; the host namespace is not even a candidate.
    assert "2 of 3 namespaces hold podseg tables" in dry.stdout
    assert "host" not in dry.stdout
    for name in names[:2]:
        assert _tables(name) == owned | foreign, "a dry run must change nothing"

    real = run_cleanup(netns_dir)
    assert real.returncode == 0, real.stderr
    assert "removed 2, failed 0" in real.stdout
    for name in names[:2]:
        assert _tables(name) == foreign, "owned tables gone, foreign ones (and ip podseg) kept"
    assert _tables(names[2]) == set()

    again = run_cleanup(netns_dir)
    assert again.returncode == 0, again.stderr
    assert "0 of 3 namespaces hold podseg tables" in again.stdout


def test_cleanup_finds_a_lone_netdev_table_and_an_uncommented_inet_table(
    node: tuple[pathlib.Path, list[str]],
) -> None:
    netns_dir, names = node
    lone = names[2]
    _nft(
        lone,
        "table netdev podseg { chain e { type filter hook egress device eth0 priority 0; }; }\n"
        "table inet podseg { }\n",
    )
    dry = run_cleanup(netns_dir, "--dry-run")
    line = next(ln for ln in dry.stdout.splitlines() if lone in ln)
    assert "tables=inet podseg+netdev podseg fp=-" in line
    real = run_cleanup(netns_dir)
    assert real.returncode == 0, real.stderr
    assert _tables(lone) == set()


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_the_daemonset_capabilities_suffice_and_a_missing_one_is_an_error(
    node: tuple[pathlib.Path, list[str]],
) -> None:
    """Run with only the capabilities deploy/ grants (NET_ADMIN, SYS_ADMIN, SYS_PTRACE): the
    scan, the reads and the deletes work; without NET_ADMIN nothing is reported clean."""
    netns_dir, names = node
    granted = run_cleanup(netns_dir, "--dry-run", caps="-all,+net_admin,+sys_admin,+sys_ptrace")
    assert granted.returncode == 0, granted.stderr
    assert "2 of 3 namespaces hold podseg tables" in granted.stdout
    no_nft = run_cleanup(netns_dir, "--dry-run", caps="-all,+sys_admin,+sys_ptrace")
    assert no_nft.returncode == 1
    assert no_nft.stdout.count("FAILED: ") == 3
    removed = run_cleanup(netns_dir, caps="-all,+net_admin,+sys_admin,+sys_ptrace")
    assert removed.returncode == 0, removed.stderr
    assert all("podseg" not in " ".join(_tables(n) - {"ip podseg"}) for n in names)
