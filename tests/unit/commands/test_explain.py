"""`podseg explain`'s input handling and output, over an in-memory snapshot: pods by name or
address, clear errors for an unknown pod, a pod without IP, a bad port or protocol."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from agent.commands import explain
from tests.support import cluster as fx

DENY_WEB = {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}


def snapshot() -> object:
    return fx.synced_store(
        pods=[
            fx.pod("shop", "web", "198.18.1.1", labels={"app": "web"}),
            fx.pod("shop", "api", "198.18.1.2", labels={"app": "api"}),
            fx.pod("shop", "new", None),
        ],
        namespaces=[fx.namespace("shop")],
        policies=[fx.policy("shop", "deny-web", DENY_WEB)],
        nodes=[fx.node("node-1", "198.18.0.1")],
    )


def run(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    explain.add_arguments(parser)
    out = io.StringIO()
    code = explain.main(parser.parse_args(list(argv)), snapshot(), out)  # type: ignore[arg-type]
    return code, out.getvalue()


def test_a_blocked_connection_names_the_isolating_policy_and_exits_1() -> None:
    code, text = run("shop/api", "shop/web", "--port", "80")
    assert code == 1
    assert text.splitlines()[0] == "shop/api -> shop/web TCP/80: DENIED"
    assert "isolated by shop/deny-web; no rule allows shop/api" in text


def test_pod_ips_are_the_pods_and_json_carries_the_sides() -> None:
    code, text = run("198.18.1.1", "198.18.1.2", "--port", "81", "--protocol", "udp", "-o", "json")
    found = json.loads(text)
    assert code == 0 and found["verdict"] == "allowed"
    assert [s["pod"] for s in found["sides"]] == ["shop/web", "shop/api"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("shop/nope", "shop/web"), "no pod shop/nope in the cluster"),
        (("shop/new", "shop/web"), "pod shop/new has no IP yet"),
        (("shop/api", "shop/web", "--port", "0"), "--port '0'"),
        (("shop/api", "shop/web", "--protocol", "icmp"), "--protocol 'icmp'"),
        (("shop/api", "web"), "'web' is neither namespace/pod nor an IP address"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run(*argv)
    assert code == 2
    assert message in capsys.readouterr().err
