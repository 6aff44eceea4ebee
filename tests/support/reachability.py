"""Expected connectivity, in the style of the upstream Kubernetes netpol e2e "Reachability".

Peers are written "ns/pod" with `*` wildcards ("x/*", "*/b", "*/*"). An expectation holds for
the ports and protocols it names (default: all), so a case can say "only 81/TCP from y".
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence

Key = tuple[str, str, int, str]


class Reachability:
    def __init__(
        self,
        pods: Sequence[str],
        *,
        default: bool = True,
        ports: Sequence[int] = (80, 81),
        protocols: Sequence[str] = ("tcp", "udp"),
    ) -> None:
        self.pods = list(pods)
        self.ports = list(ports)
        self.protocols = list(protocols)
        self.expected: dict[Key, bool] = {
            (s, d, port, proto): default
            for s in self.pods
            for d in self.pods
            if s != d
            for port in self.ports
            for proto in self.protocols
        }

    def _select(self, pattern: str) -> list[str]:
        return [p for p in self.pods if fnmatch.fnmatchcase(p, pattern)]

    def expect(
        self,
        src: str,
        dst: str,
        allowed: bool,
        *,
        ports: Iterable[int] | None = None,
        protocols: Iterable[str] | None = None,
    ) -> Reachability:
        port_list = list(ports) if ports is not None else self.ports
        proto_list = list(protocols) if protocols is not None else self.protocols
        for s in self._select(src):
            for d in self._select(dst):
                if s == d:
                    continue
                for port in port_list:
                    for proto in proto_list:
                        self.expected[(s, d, port, proto)] = allowed
        return self

    def ingress(self, dst: str, allowed: bool, **kw: Iterable[int] | Iterable[str]) -> Reachability:
        return self.expect("*/*", dst, allowed, **kw)  # type: ignore[arg-type]

    def egress(self, src: str, allowed: bool, **kw: Iterable[int] | Iterable[str]) -> Reachability:
        return self.expect(src, "*/*", allowed, **kw)  # type: ignore[arg-type]


def differences(expected: Mapping[Key, bool], verdicts: Mapping[Key, str]) -> list[str]:
    """Human-readable mismatches; a blocked probe must time out (not be refused or EPERM)."""
    out = []
    for key, allowed in sorted(expected.items()):
        verdict = verdicts.get(key, "missing")
        ok = verdict == "ok" if allowed else verdict == "timeout"
        if not ok:
            src, dst, port, proto = key
            want = "ok" if allowed else "timeout"
            out.append(f"{src} -> {dst} {port}/{proto}: want {want}, got {verdict}")
    return out
