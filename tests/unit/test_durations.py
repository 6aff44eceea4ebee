"""Durations on the command line (`--flow-retention`, `--since`) and the local API's `since`."""

from __future__ import annotations

import pytest

from agent import durations, localapi


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        ("2w", 1209600.0),
        ("1.5h", 5400.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert durations.parse(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1y", "-1h", "0", "1 h 2", "1e3s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        durations.parse(text)


def test_since_is_a_duration_back_or_a_time() -> None:
    assert localapi.parse_since(None, 5000.0) is None
    assert localapi.parse_since("1h", 5000.0) == 1400.0
    assert localapi.parse_since("1970-01-01T01:00:00Z", 5000.0) == 3600.0
    assert localapi.parse_since("1970-01-01T01:00:00", 5000.0) == 3600.0  # UTC when no zone
    with pytest.raises(ValueError, match="neither a duration"):
        localapi.parse_since("2026-13-45T00:00:00Z", 0.0)
