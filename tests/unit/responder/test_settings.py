"""`podseg responder` settings, pure: flags and variables into `Settings`, bad values refused
with a message naming the flag or variable."""

from __future__ import annotations

import argparse

import pytest

from agent import config
from agent.responder import settings


def _settings(*args: str, **env: str) -> settings.Settings:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    given = parser.parse_args(["--token-file", "/t", *args])
    return settings.settings_from_args(given, env)


def test_protected_namespaces_default_to_the_clusters_and_podsegs_own() -> None:
    assert _settings().protected_namespaces == {"kube-system", "podseg-system"}


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (
            ("--protected-namespaces", "kube-system, istio-system"),
            {},
            {"kube-system", "istio-system"},
        ),
        ((), {"PODSEG_RESPONDER_PROTECTED_NAMESPACES": "vault"}, {"vault"}),
        (("--protected-namespaces", "none"), {}, set()),
        (("--protected-namespaces", "a"), {"PODSEG_RESPONDER_PROTECTED_NAMESPACES": "b"}, {"a"}),
    ],
)
def test_protected_namespaces_from_flag_or_variable(
    args: tuple[str, ...], env: dict[str, str], expected: set[str]
) -> None:
    assert _settings(*args, **env).protected_namespaces == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Kube-System", "'Kube-System' is not a namespace name"),
        (",", "expected comma-separated namespace names"),
        ("a,b/c", "'b/c' is not a namespace name"),
    ],
)
def test_bad_protected_namespaces_are_refused(value: str, message: str) -> None:
    with pytest.raises(config.ConfigError, match="--protected-namespaces") as caught:
        _settings("--protected-namespaces", value)
    assert message in str(caught.value)


def test_rate_limit_defaults_and_settings() -> None:
    config = _settings()
    assert (config.rate_limit, config.rate_burst) == (20.0, 100)
    config = _settings("--rate-limit", "0.5", "--rate-burst", "5")
    assert (config.rate_limit, config.rate_burst) == (0.5, 5)
    env = {"PODSEG_RESPONDER_RATE_LIMIT": "0", "PODSEG_RESPONDER_RATE_BURST": "1"}
    config = _settings(**env)
    assert (config.rate_limit, config.rate_burst) == (0.0, 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--rate-limit", "-1"), "--rate-limit '-1': must be a number, 0 or more"),
        (("--rate-limit", "nan"), "--rate-limit 'nan': must be a number, 0 or more"),
        (("--rate-limit", "fast"), "--rate-limit 'fast'"),
        (("--rate-burst", "0"), "--rate-burst '0': must be at least 1"),
    ],
)
def test_bad_rate_limits_are_refused(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        _settings(*args)
    assert message in str(caught.value)
