"""Discovery documents (/api, /apis, /api/v1, /apis/GROUP/VERSION, /version).

Clients such as the dynamic client and kubectl read these before touching resources; they
are generated from the resource catalogue so they always agree with what is served, including
the kinds of CustomResourceDefinitions created at run time.
"""

from __future__ import annotations

import re
from typing import Any

from testbed.emulator import resources

VERSION_INFO: dict[str, str] = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-podseg-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def version_priority(version: str) -> tuple[int, int, int, str]:
    """kube-apiserver's version order: GA before beta before alpha, higher numbers first,
    anything else last by name (a sort key: smallest first)."""
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if match is None:
        return (3, 0, 0, version)
    stage = {None: 0, "beta": 1, "alpha": 2}[match.group(2)]
    return (stage, -int(match.group(1)), -int(match.group(3) or 0), "")


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    entries = [
        {"groupVersion": f"{name}/{v}", "version": v}
        for v in sorted(versions, key=version_priority)
    ]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(catalogue: resources.Catalogue) -> dict[str, Any]:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group(g, vs) for g, vs in catalogue.group_versions().items()],
    }


def api_group(catalogue: resources.Catalogue, name: str) -> dict[str, Any] | None:
    versions = catalogue.group_versions().get(name)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def api_resource_list(
    catalogue: resources.Catalogue, group: str, version: str
) -> dict[str, Any] | None:
    types = catalogue.in_group(group, version)
    if not types:
        return None
    entries: list[dict[str, Any]] = []
    for rt in types:
        entry: dict[str, Any] = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(resources.ALL_VERBS),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        entries.append(entry)
        for sub in rt.subresources:
            entries.append(
                {
                    "name": f"{rt.plural}/{sub}",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": entries}
