"""Where the flow tools read their graph: a readable podseg flow graph file, or one line and
exit 2 (missing file, not JSON, another document; without --flows, a cluster that cannot be
read)."""

from __future__ import annotations

import json
import pathlib

import pytest

from tests.support import flowgraphs as fg

COMMANDS = {
    "map": ["-o", "{tmp}/m.svg"],
    "recommend": ["-n", "shop"],
    "whatif": ["{tmp}/p.yaml"],
}
POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "p", "namespace": "shop"},
    "spec": {"podSelector": {}},
}


def _args(command: str, tmp: pathlib.Path) -> list[str]:
    (tmp / "p.yaml").write_text(json.dumps(POLICY))
    return [command, *(a.format(tmp=tmp) for a in COMMANDS[command])]


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot read"),
        ("not json at all", "not a podseg flow graph: not JSON"),
        ('{"apiVersion": "v1", "kind": "ConfigMap"}', "not a podseg flow graph"),
        ('{"apiVersion": "podseg.io/v1", "kind": "FlowGraph", "generated": 3}', "generated"),
    ],
)
def test_a_file_that_is_not_a_flow_graph(
    command: str, content: str | None, says: str, tmp_path: pathlib.Path
) -> None:
    flows = tmp_path / "flows.json"
    if content is not None:
        flows.write_text(content)
    done = fg.podseg(*_args(command, tmp_path), "--flows", str(flows))
    line = fg.one_line_error(done, command)
    assert says in line and str(flows) in line


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_without_flows_file_the_agents_are_asked(command: str, tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "no-such-kubeconfig"
    done = fg.podseg(*_args(command, tmp_path), "--kubeconfig", str(missing))
    assert str(missing) in fg.one_line_error(done, command)
