"""The emulator's validator accepts exactly what the real API server accepts (hypothesis), judged
by an independent restatement of the upstream rules (pkg/apis/networking/validation and
apimachinery's IsValidPortName / IsQualifiedName / IsValidLabelValue), and the agent converts
everything the validator accepts without reporting an error."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.k8s import convert
from testbed.emulator import validation
from tests.support.strategies import SETTINGS, policy_obj, valid_specs

_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

PORT_VALUES: Sequence[Any] = (
    None, 1, 80, 65535, 0, 65536, -5, "http", "serve-80-tcp", "a-b", "80", "HTTP", "-dns",
    "dns-", "a--b", "abcdefghijklmnop", "abcdefghijklmno", "", "web_1",
)  # fmt: skip
END_VALUES: Sequence[Any] = (None, 80, 81, 65535, 65536, 10, "90")
PROTOCOL_VALUES: Sequence[Any] = (None, "TCP", "UDP", "SCTP", "tcp", "ICMP")
CIDR_VALUES: Sequence[str] = (
    "10.0.0.0/8", "198.18.0.0/15", "fd00:198:18::/48", "0.0.0.0/0", "::/0", "10.0.0.0/33",
    "bad", "", "10.0.0.1", "fd00::/129",
)  # fmt: skip
EXCEPT_VALUES: Sequence[str] = (
    "10.1.0.0/16", "10.0.0.0/8", "11.0.0.0/16", "198.18.1.0/24", "fd00:198:18:1::/64",
    "10.0.0.0/4", "bad", "0.0.0.0/1",
)  # fmt: skip
KEY_VALUES: Sequence[str] = (
    "app", "example.com/team", "a.b_c-d", "-bad", "bad-", "UPPER", "x" * 63, "x" * 64,
    "Example.com/x", "/x", "a/b/c", "",
)  # fmt: skip
VALUE_VALUES: Sequence[Any] = ("", "web", "a.b-c_d", "-x", "x" * 63, "x" * 64, "sp ace")
OPERATOR_VALUES: Sequence[str] = ("In", "NotIn", "Exists", "DoesNotExist", "in", "Equals")
TYPE_VALUES: Sequence[Any] = ("Ingress", "Egress", "ingress", "Both")


def oracle_port_name(name: str) -> bool:
    """apimachinery IsValidPortName (IANA_SVC_NAME)."""
    return (
        0 < len(name) <= 15
        and _PORT_NAME.match(name) is not None
        and re.search("[a-z]", name) is not None
        and "--" not in name
    )


def oracle_port(port: dict[str, Any]) -> bool:
    protocol, value, end = port.get("protocol"), port.get("port"), port.get("endPort")
    if protocol is not None and protocol not in ("TCP", "UDP", "SCTP"):
        return False
    if end is not None and not isinstance(end, int):
        return False
    if value is None:
        return end is None
    if isinstance(value, int):
        if not 1 <= value <= 65535:
            return False
        return end is None or (value <= end <= 65535)
    return end is None and oracle_port_name(value)


def _net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False) if "/" in text else None
    except ValueError:
        return None


def oracle_ip_block(block: dict[str, Any]) -> bool:
    cidr = _net(block["cidr"])
    if cidr is None:
        return False
    for text in block.get("except", []):
        sub = _net(text)
        if sub is None or sub.version != cidr.version:
            return False
        if sub.network_address not in cidr or sub.prefixlen <= cidr.prefixlen:
            return False
    return True


def oracle_key(key: str) -> bool:
    """IsQualifiedName: optional DNS-subdomain prefix (<=253) and '/', name <= 63."""
    parts = key.split("/")
    if len(parts) > 2:
        return False
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix):
            return False
    name = parts[-1]
    return 0 < len(name) <= 63 and _LABEL_NAME.match(name) is not None


def oracle_value(value: str) -> bool:
    return value == "" or (len(value) <= 63 and _LABEL_NAME.match(value) is not None)


def oracle_selector(sel: dict[str, Any]) -> bool:
    for key, value in sel.get("matchLabels", {}).items():
        if not (oracle_key(key) and oracle_value(value)):
            return False
    for expr in sel.get("matchExpressions", []):
        op, values = expr["operator"], expr.get("values", [])
        if not oracle_key(expr["key"]) or not all(oracle_value(v) for v in values):
            return False
        if op in ("In", "NotIn"):
            if not values:
                return False
        elif op in ("Exists", "DoesNotExist"):
            if values:
                return False
        else:
            return False
    return True


def oracle_peer(peer: dict[str, Any]) -> bool:
    count = sum(k in peer for k in ("podSelector", "namespaceSelector", "ipBlock"))
    if count == 0 or (count > 1 and "ipBlock" in peer):
        return False
    selectors_ok = all(
        oracle_selector(peer[k]) for k in ("podSelector", "namespaceSelector") if k in peer
    )
    return selectors_ok and ("ipBlock" not in peer or oracle_ip_block(peer["ipBlock"]))


def oracle_spec(spec: dict[str, Any]) -> bool:
    if not oracle_selector(spec["podSelector"]):
        return False
    for direction, peer_key in (("ingress", "from"), ("egress", "to")):
        for rule in spec.get(direction, []):
            if not all(oracle_port(p) for p in rule.get("ports", [])):
                return False
            if not all(oracle_peer(p) for p in rule.get(peer_key, [])):
                return False
    types = spec.get("policyTypes", [])
    return len(types) <= 2 and all(t in ("Ingress", "Egress") for t in types)


@st.composite
def api_selectors(draw: st.DrawFn) -> dict[str, Any]:
    sel: dict[str, Any] = {}
    if draw(st.booleans()):
        sel["matchLabels"] = draw(
            st.dictionaries(st.sampled_from(KEY_VALUES), st.sampled_from(VALUE_VALUES), max_size=2)
        )
    if draw(st.booleans()):
        sel["matchExpressions"] = [
            {
                "key": draw(st.sampled_from(KEY_VALUES)),
                "operator": draw(st.sampled_from(OPERATOR_VALUES)),
                **(
                    {"values": draw(st.lists(st.sampled_from(VALUE_VALUES), max_size=2))}
                    if draw(st.booleans())
                    else {}
                ),
            }
            for _ in range(draw(st.integers(0, 2)))
        ]
    return sel


@st.composite
def api_peers(draw: st.DrawFn) -> dict[str, Any]:
    peer: dict[str, Any] = {}
    if draw(st.integers(0, 3)) == 0:
        peer["podSelector"] = draw(api_selectors())
    if draw(st.integers(0, 3)) == 0:
        peer["namespaceSelector"] = draw(api_selectors())
    if draw(st.integers(0, 2)) == 0 or not peer:
        block: dict[str, Any] = {"cidr": draw(st.sampled_from(CIDR_VALUES))}
        if draw(st.booleans()):
            block["except"] = draw(st.lists(st.sampled_from(EXCEPT_VALUES), max_size=2))
        peer["ipBlock"] = block
    if draw(st.integers(0, 15)) == 0:
        peer.clear()
    return peer


@st.composite
def api_ports(draw: st.DrawFn) -> dict[str, Any]:
    raw = {
        "protocol": draw(st.sampled_from(PROTOCOL_VALUES)),
        "port": draw(st.sampled_from(PORT_VALUES)),
        "endPort": draw(st.sampled_from(END_VALUES)),
    }
    return {k: v for k, v in raw.items() if v is not None}


@st.composite
def api_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": draw(api_selectors())}
    for direction, peer_key in (("ingress", "from"), ("egress", "to")):
        if draw(st.booleans()):
            spec[direction] = [
                {
                    peer_key: draw(st.lists(api_peers(), max_size=2)),
                    "ports": draw(st.lists(api_ports(), max_size=2)),
                }
                for _ in range(draw(st.integers(0, 2)))
            ]
    if draw(st.booleans()):
        spec["policyTypes"] = draw(st.lists(st.sampled_from(TYPE_VALUES), max_size=3))
    return spec


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=api_specs())
def test_emulator_validator_matches_the_upstream_rules(spec: dict[str, Any]) -> None:
    accepted = validation.validate_network_policy_spec(spec) == []
    assert accepted == oracle_spec(spec), validation.validate_network_policy_spec(spec)
    if accepted:
        # Whatever the API server accepts, the agent understands without complaint.
        assert convert.network_policy(policy_obj("x", "ok", spec)).errors == ()


@SETTINGS
@given(spec=valid_specs())
def test_generated_valid_policies_are_accepted(spec: dict[str, Any]) -> None:
    """The generators used above produce what the API accepts (keeps them honest)."""
    assert validation.validate_network_policy_spec(spec) == []
    assert convert.network_policy(policy_obj("x", "ok", spec)).errors == ()
