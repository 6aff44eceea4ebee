"""Drop-capture settings: defaults, flags, environment fallbacks, bad values named."""

from __future__ import annotations

import pytest

from agent import config


def test_flow_defaults() -> None:
    settings = config.parse(["--node-name", "n"])
    assert settings.flow_log_file is None  # stdout
    assert settings.flow_window == 5.0 and settings.max_drop_series == 1000
    assert settings.flow_capture is True


def test_flow_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODSEG_FLOW_WINDOW", "2.5")
    monkeypatch.setenv("PODSEG_NO_FLOW_CAPTURE", "1")
    settings = config.parse(
        ["--node-name", "n", "--flow-log-file", "/tmp/f.jsonl", "--max-drop-series", "7"]
    )
    assert settings.flow_log_file == "/tmp/f.jsonl" and settings.max_drop_series == 7
    assert settings.flow_window == 2.5 and settings.flow_capture is False


@pytest.mark.parametrize(
    ("argv", "flag"),
    [(["--flow-window", "0"], "--flow-window"), (["--max-drop-series", "0"], "--max-drop-series")],
)
def test_bad_flow_values_name_the_flag(argv: list[str], flag: str) -> None:
    with pytest.raises(config.ConfigError, match=flag):
        config.parse(["--node-name", "n", *argv])
