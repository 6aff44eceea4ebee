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


@pytest.mark.parametrize(
    ("variable", "value", "setting", "expected"),
    [
        ("PODSEG_STRICT", "no", "strict", False),
        ("PODSEG_STRICT", "ON", "strict", True),
        ("PODSEG_NODE_GUARD", "off", "node_guard_ports", None),
        ("PODSEG_NO_FLOW_CAPTURE", "no", "flow_capture", True),
        ("PODSEG_NO_FLOW_CAPTURE", "yes", "flow_capture", False),
        ("PODSEG_NO_PROC_SCAN", "1", "scan_proc", False),
        ("PODSEG_NO_PROC_SCAN", "false", "scan_proc", True),
        ("PODSEG_RESYNC_PERIOD", "12.5", "resync_period", 12.5),
        ("PODSEG_DATAPLANE_THREADS", "4", "dataplane_threads", 4),
        ("PODSEG_TAMPER_WATCH", "false", "tamper_watch", False),
        ("PODSEG_STRICT", "", "strict", True),  # empty means unset: the default
    ],
)
def test_every_boolean_variable_reads_one_vocabulary(
    variable: str, value: str, setting: str, expected: object
) -> None:
    settings = config.parse(["--node-name", "n"], {variable: value})
    assert getattr(settings, setting) == expected


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PODSEG_STRICT", "maybe"),
        ("PODSEG_NO_FLOW_CAPTURE", "2"),
        ("PODSEG_RESYNC_PERIOD", "abc"),
        ("PODSEG_RESYNC_PERIOD", "-1"),
        ("PODSEG_MAX_DROP_SERIES", "0"),
        ("PODSEG_DATAPLANE_THREADS", "0"),
        ("PODSEG_BACKEND", "ebpf"),
        ("PODSEG_LOG_LEVEL", "loud"),
        ("PODSEG_METRICS_ADDRESS", "9808"),
    ],
)
def test_a_bad_variable_is_an_error_naming_it(variable: str, value: str) -> None:
    with pytest.raises(config.ConfigError, match=variable):
        config.parse(["--node-name", "n"], {variable: value})


def test_a_flag_wins_over_its_variable() -> None:
    env = {"PODSEG_BACKEND": "nftables", "PODSEG_STRICT": "true"}
    settings = config.parse(["--node-name", "n", "--backend", "iptables", "--no-strict"], env)
    assert settings.backend == "iptables" and not settings.strict


def test_the_tamper_watch_is_on_unless_switched_off() -> None:
    assert config.parse(["--node-name", "n"], {}).tamper_watch
    assert not config.parse(["--node-name", "n", "--no-tamper-watch"], {}).tamper_watch


def test_defaults_are_the_settings_dataclass_defaults() -> None:
    settings = config.parse(["--node-name", "n"], {})
    assert settings == config.Settings("n", None)
