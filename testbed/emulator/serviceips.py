"""Service ClusterIP allocation and its validation, as the real API server does it.

Clients (the agent, the sandbox service proxy, tests) read `spec.clusterIP(s)` and
`spec.ipFamilies` back from the server, so the emulator must fill them like kube-apiserver:
allocate from a service CIDR per IP family, honour `ipFamilyPolicy` (SingleStack,
PreferDualStack, RequireDualStack), keep the allocation on updates that omit it, refuse an
address that is outside the range or already taken, and treat `clusterIP: None` as headless.

The ranges lie inside the sandbox's address space (198.18.0.0/15, fd00:198:18::/48) but away
from every address `testbed.sandbox.addressing` hands to nodes, pods and links.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

SERVICE_CIDR_V4 = ipaddress.IPv4Network("198.19.192.0/20")
SERVICE_CIDR_V6 = ipaddress.IPv6Network("fd00:198:18:ffff::/112")
CIDRS: dict[str, ipaddress.IPv4Network | ipaddress.IPv6Network] = {
    "IPv4": SERVICE_CIDR_V4,
    "IPv6": SERVICE_CIDR_V6,
}
FAMILIES = ("IPv4", "IPv6")
POLICIES = ("SingleStack", "PreferDualStack", "RequireDualStack")


class AllocationError(ValueError):
    """A requested ClusterIP cannot be had (out of range, taken, or the range is full)."""


def family_of(ip: str) -> str | None:
    """`IPv4` / `IPv6` for a valid address, else None."""
    try:
        return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"
    except ValueError:
        return None


def used(services: Iterable[dict[str, Any]], skip: tuple[str, str] | None = None) -> set[str]:
    """Every ClusterIP held by `services` (except the one keyed (namespace, name) `skip`)."""
    out: set[str] = set()
    for svc in services:
        meta = svc.get("metadata") or {}
        if skip is not None and (meta.get("namespace"), meta.get("name")) == skip:
            continue
        spec = svc.get("spec") or {}
        for ip in spec.get("clusterIPs") or [spec.get("clusterIP")]:
            if isinstance(ip, str) and family_of(ip):
                out.add(str(ipaddress.ip_address(ip)))
    return out


def allocate(family: str, taken: set[str]) -> str:
    """The lowest free address of the family's range (network address and .1 left out)."""
    network = CIDRS[family]
    size = network.num_addresses
    for offset in range(10, min(size - 1, 1 << 16)):
        candidate = str(network.network_address + offset)
        if candidate not in taken:
            return candidate
    raise AllocationError(f"range is full: no free {family} ClusterIP in {network}")


def check_requested(ip: str, taken: set[str]) -> None:
    """Raise AllocationError if a client-chosen ClusterIP is outside the range or in use."""
    family = family_of(ip)
    if family is None:
        raise AllocationError(f"{ip!r} is not a valid IP address")
    if ipaddress.ip_address(ip) not in CIDRS[family]:
        raise AllocationError(
            f"failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. "
            f"The range of valid IPs is {CIDRS[family]}"
        )
    if str(ipaddress.ip_address(ip)) in taken:
        raise AllocationError(f"failed to allocate IP {ip}: provided IP is already allocated")


def fill(spec: dict[str, Any], taken: set[str]) -> None:
    """Default `clusterIP(s)`, `ipFamilies` and `ipFamilyPolicy` of a non-ExternalName spec.

    Raises AllocationError for a requested address that cannot be had; leaves malformed
    values (wrong types, unknown families) for validation to report.
    """
    requested = spec.get("clusterIPs")
    single = spec.get("clusterIP")
    if isinstance(requested, list) and requested and single and single != requested[0]:
        return  # validation reports the disagreement (or the change of an immutable field)
    if not isinstance(requested, list) or not requested:
        requested = [single] if isinstance(single, str) and single else []
    if requested == ["None"] or spec.get("clusterIP") == "None":
        spec["clusterIP"] = "None"
        spec["clusterIPs"] = ["None"]
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("ipFamilies", ["IPv4"])
        return
    if not all(isinstance(ip, str) and family_of(ip) for ip in requested):
        return  # validation reports it
    policy = spec.setdefault("ipFamilyPolicy", "SingleStack")
    families = spec.get("ipFamilies")
    if not isinstance(families, list) or not families:
        families = [family_of(ip) for ip in requested] or ["IPv4"]
        if policy in ("PreferDualStack", "RequireDualStack") and len(families) == 1:
            families.append("IPv6" if families[0] == "IPv4" else "IPv4")
    elif policy in ("PreferDualStack", "RequireDualStack") and len(families) == 1:
        families = [*families, "IPv6" if families[0] == "IPv4" else "IPv4"]
    if not all(f in FAMILIES for f in families) or policy not in POLICIES:
        spec["ipFamilies"] = families
        return  # validation reports it
    spec["ipFamilies"] = families
    ips: list[str] = []
    for i, family in enumerate(families):
        if i < len(requested):
            if family_of(requested[i]) != family:
                spec["clusterIPs"] = requested
                return  # validation reports the family mismatch
            check_requested(requested[i], taken)
            ip = str(ipaddress.ip_address(requested[i]))
        else:
            ip = allocate(family, taken)
        taken.add(ip)
        ips.append(ip)
    spec["clusterIPs"] = ips
    spec["clusterIP"] = ips[0]
