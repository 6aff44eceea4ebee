"""Listing the candidate namespaces of a node, each once, with its interfaces, addresses and
routes, so the agent can find a pod's namespace by the pod's IPs (never through CNI files) and
learn its gateways and on-link prefixes."""

from __future__ import annotations

import os

from agent.dataplane import enter, linkaddrs, netns, protocol


def scan(host: enter.Host, request: protocol.Scan) -> protocol.Scanned:
    """Every candidate namespace once (named ones in `netns_dir` first, then /proc), never
    the host namespace; namespaces that vanish while listed are skipped. Plus the host
    namespace's own addresses (the thread is in it between entries)."""
    own = tuple(sorted({a for i in linkaddrs.interfaces() for a in _interface(i).addrs}))
    seen: set[enter.Ident] = {host.ident}
    found: list[netns.Candidate] = []
    paths: list[str] = []
    if request.paths:
        paths += list(request.paths)
    elif os.path.isdir(request.netns_dir):
        names = sorted(os.listdir(request.netns_dir))
        paths += [os.path.join(request.netns_dir, n) for n in names]
    if request.proc and not request.paths:
        paths += [f"/proc/{p}/ns/net" for p in os.listdir("/proc") if p.isdigit()]
    for path in paths:
        try:
            fd, ident = host.open(path, None)
        except protocol.NetnsGone:
            continue
        try:
            if ident in seen:
                continue
            seen.add(ident)
            with host.inside(fd):
                listed, routes = linkaddrs.view()
        except OSError:
            continue
        finally:
            os.close(fd)
        interfaces = tuple(_interface(i) for i in listed)
        found.append(netns.Candidate(path, ident[1], interfaces, tuple(_route(r) for r in routes)))
    return protocol.Scanned(tuple(found), own)


def _route(listed: dict[str, object]) -> netns.Route:
    gateway = listed.get("gateway")
    return netns.Route(
        str(listed.get("dst")), str(gateway) if gateway else None, str(listed.get("interface"))
    )


def _interface(listed: dict[str, object]) -> netns.Interface:
    addrs = listed.get("addrs")
    return netns.Interface(
        str(listed.get("name")), tuple(str(a) for a in addrs) if isinstance(addrs, list) else ()
    )
