"""`podseg cni install|uninstall` on a node's CNI directories: the conflist gains podseg-cni
after the main plugin, a second install changes nothing, and uninstall restores the original
conflist byte for byte (or, when rewritten since, takes out only podseg-cni's entry)."""

from __future__ import annotations

import json
import pathlib

import pytest

from agent import cli

ORIGINAL = (
    b'{\n  "cniVersion": "1.0.0",\n  "name": "k8s-pod-network",\n'
    b'  "plugins": [ {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}},\n'
    b'    {"type": "portmap", "capabilities": {"portMappings": true}} ]\n}\n'
)


@pytest.fixture
def node(tmp_path: pathlib.Path) -> dict[str, pathlib.Path]:
    conf, bin_dir = tmp_path / "net.d", tmp_path / "bin"
    conf.mkdir()
    (conf / "10-bridge.conflist").write_bytes(ORIGINAL)
    (conf / "99-other.conflist").write_bytes(b'{"plugins": []}')
    plugin = tmp_path / "podseg-cni"
    plugin.write_bytes(b"\x7fELF fake plugin")
    return {"conf": conf, "bin": bin_dir, "plugin": plugin}


def _run(node: dict[str, pathlib.Path], action: str, *extra: str) -> int:
    return cli.main(
        [
            "cni",
            action,
            "--conf-dir",
            str(node["conf"]),
            "--bin-dir",
            str(node["bin"]),
            "--plugin-binary",
            str(node["plugin"]),
            *extra,
        ]
    )


def _listing(conf: pathlib.Path) -> list[str]:
    return sorted(p.name for p in conf.iterdir())


def test_install_chains_after_the_main_plugin_and_is_idempotent(
    node: dict[str, pathlib.Path],
) -> None:
    assert _run(node, "install", "--cluster-dns", "198.18.200.10", "--fail-open") == 0
    conflist = node["conf"] / "10-bridge.conflist"
    doc = json.loads(conflist.read_bytes())
    assert [p["type"] for p in doc["plugins"]] == ["bridge", "portmap", "podseg-cni"]
    assert doc["plugins"][-1]["clusterDNS"] == ["198.18.200.10"]
    assert doc["plugins"][-1]["failOpen"] is True
    assert (node["bin"] / "podseg-cni").read_bytes() == node["plugin"].read_bytes()
    assert (node["bin"] / "podseg-cni").stat().st_mode & 0o111
    first = conflist.read_bytes()
    assert _run(node, "install", "--cluster-dns", "198.18.200.10", "--fail-open") == 0
    assert conflist.read_bytes() == first
    assert (node["conf"] / "99-other.conflist").read_bytes() == b'{"plugins": []}'
    assert not [n for n in _listing(node["conf"]) if n.startswith(".podseg-")]  # no temp left


def test_uninstall_restores_the_conflist_byte_for_byte(node: dict[str, pathlib.Path]) -> None:
    before = _listing(node["conf"])
    assert _run(node, "install") == 0
    assert _run(node, "install") == 0
    assert _run(node, "uninstall") == 0
    assert (node["conf"] / "10-bridge.conflist").read_bytes() == ORIGINAL
    assert _listing(node["conf"]) == before
    assert not (node["bin"] / "podseg-cni").exists()
    assert _run(node, "uninstall") == 0  # idempotent
    assert (node["conf"] / "10-bridge.conflist").read_bytes() == ORIGINAL


def test_uninstall_after_a_rewrite_takes_out_only_our_entry(
    node: dict[str, pathlib.Path],
) -> None:
    assert _run(node, "install") == 0
    conflist = node["conf"] / "10-bridge.conflist"
    doc = json.loads(conflist.read_bytes())
    doc["plugins"].insert(1, {"type": "bandwidth"})
    conflist.write_text(json.dumps(doc))
    assert _run(node, "uninstall") == 0
    types = [p["type"] for p in json.loads(conflist.read_bytes())["plugins"]]
    assert types == ["bridge", "bandwidth", "portmap"]


def test_no_conflist_chains_nothing_and_lets_the_agent_start(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty, bins = tmp_path / "empty", tmp_path / "bin"
    empty.mkdir()
    bins.mkdir()
    code = cli.main(["cni", "install", "--conf-dir", str(empty), "--bin-dir", str(bins)])
    assert code == 0  # an init container that fails would hold the agent back on this node
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no *.conflist" in out and "not chained" in out
    assert list(empty.iterdir()) == [] and list(bins.iterdir()) == []


def test_a_named_conflist_that_is_missing_is_one_line_and_exit_2(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--conf-dir", str(tmp_path), "--bin-dir", str(tmp_path), "--conflist", "10-x.conflist"]
    assert cli.main(["cni", "install", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err


def test_a_conflist_that_is_not_one_is_refused_untouched(node: dict[str, pathlib.Path]) -> None:
    bad = node["conf"] / "10-bridge.conflist"
    bad.write_bytes(b'{"type": "bridge"}')
    assert _run(node, "install") == 2
    assert bad.read_bytes() == b'{"type": "bridge"}'
    assert not (node["conf"] / "10-bridge.conflist.podseg-orig").exists()
