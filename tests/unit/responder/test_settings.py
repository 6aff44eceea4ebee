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
