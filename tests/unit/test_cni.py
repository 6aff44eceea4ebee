"""The agent reads podseg-cni's request lines strictly and names a namespace as its scan does."""

from __future__ import annotations

import json
import pathlib

import pytest

from agent import cni


def _line(**over: object) -> bytes:
    body: dict[str, object] = {
        "op": "add",
        "namespace": "x",
        "name": "web-1",
        "netns": "/run/netns/psg-a",
        "ips": ["198.18.1.2", "fd00:198:18::1:2"],
        "containerId": "c0ffee",
    }
    body.update(over)
    return json.dumps(body).encode() + b"\n"


def test_a_request_is_read() -> None:
    request = cni.parse(_line())
    assert request.key == "x/web-1"
    assert request.ips == ("198.18.1.2", "fd00:198:18::1:2")
    assert request.netns == "/run/netns/psg-a" and request.container_id == "c0ffee"


@pytest.mark.parametrize(
    "line",
    [
        b"{not json",
        b"[]",
        _line(name=""),
        _line(namespace=None),
        _line(ips=[]),
        _line(ips=["not-an-ip"]),
        _line(netns="relative/path"),
    ],
)
def test_bad_requests_are_refused(line: bytes) -> None:
    with pytest.raises(cni.BadRequest):
        cni.parse(line)


def test_a_namespace_file_is_named_as_the_netns_dir_names_it(tmp_path: pathlib.Path) -> None:
    runtime = tmp_path / "run-netns"
    runtime.mkdir()
    (runtime / "cni-1").write_text("")
    (runtime / "cni-2").write_text("")
    agent_dir = tmp_path / "agent-netns"
    agent_dir.mkdir()
    (agent_dir / "cni-1").symlink_to(runtime / "cni-1")
    (agent_dir / "cni-2").write_text("")  # same name, another file
    assert cni.normalize(str(runtime / "cni-1"), str(agent_dir)) == str(agent_dir / "cni-1")
    assert cni.normalize(str(runtime / "cni-2"), str(agent_dir)) == str(runtime / "cni-2")
    assert cni.normalize("/proc/1/ns/net", str(agent_dir)) == "/proc/1/ns/net"
