"""Settings: required node name, validated flags, environment fallbacks."""

from __future__ import annotations

import pytest

from agent import config


def test_node_name_is_required() -> None:
    with pytest.raises(config.ConfigError, match="node-name"):
        config.parse([])


def test_defaults_and_metrics_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "node-7")
    settings = config.parse(["--metrics-address", "127.0.0.1:0"])
    assert settings.node_name == "node-7"
    assert (settings.metrics_host, settings.metrics_port) == ("127.0.0.1", 0)
    assert settings.backend == "nftables"
    assert settings.netns_dir == "/var/run/netns"


@pytest.mark.parametrize(
    "argv",
    [
        ["--backend", "ebpf"],
        ["--metrics-address", "nope"],
        ["--log-format", "xml"],
        ["--resync-period", "0"],
    ],
)
def test_bad_values_are_rejected_with_the_flag_named(argv: list[str]) -> None:
    with pytest.raises(config.ConfigError):
        config.parse(["--node-name", "n", *argv])


def test_iptables_backend_is_accepted() -> None:
    settings = config.parse(["--node-name", "n", "--backend", "iptables"])
    assert settings.backend == "iptables"
