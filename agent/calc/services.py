"""Service translation for egress: allow a Service's virtual addresses where its backends are
allowed. Pure.

Egress rules run inside the pod's namespace, before any service proxy: a pod talking to the
`db` Service sends to its ClusterIP, which the proxy on the host rewrites to a backend later.
NetworkPolicy names backends (pods, ports), so without this step "allow to app=db on 5432"
would drop the very connection it means to allow.

The rule, per local pod and per egress-isolated direction, after the policies are compiled:
a Service *frontend* -- one virtual address (ClusterIP of each family, externalIPs,
LoadBalancer ingress IPs) x protocol x Service port -- is allowed when at least one READY
backend behind it, of the same IP family, is itself allowed by the compiled egress on the port
the Service port resolves to on that backend (the EndpointSlice carries the resolved number,
so named targetPorts resolve per backend). With `internalTrafficPolicy: Local`, only backends
on the client's own node count, as the proxy only uses those. The frontends become ordinary
`PeerPort` elements of the egress `*_ports` sets (ClusterIP . protocol . port): no rule
changes, so endpoint churn only moves set elements.

Virtual addresses themselves are never peers: NetworkPolicy judges the traffic after the
proxy's translation, so an `ipBlock` (or any peer) that happens to cover a ClusterIP does not
open it; only its backends do. The translation therefore first removes every Service's virtual
addresses from the compiled egress and then adds back the frontends the backends open (an
`ipBlock` 192.0.0.0/4 except the server pod's /32 must not reach that pod through its
ClusterIP, which lies inside 192.0.0.0/4: upstream's e2e spec "should enforce except clause
while egress access to server in CIDR block").

Precision: the pod's namespace sees the ClusterIP, never the backend the proxy will pick. A
Service with allowed and disallowed backends is therefore opened as a whole (the proxy may
choose a disallowed backend); direct traffic to backend pod IPs stays exact. A Service none of
whose ready backends is allowed is never opened. Headless and ExternalName Services need
nothing: clients reach pod IPs, which the policies already cover.

Bad input (Services without selector, slices naming unknown pods or no Service, Service ports
that resolve to nothing) is reported in `ServiceIndex.problems` for the agent to log once; it
never opens anything by itself: a backend counts only through its address and resolved port.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence

from agent import model
from agent.calc import intervals, ruleset

_FAMILIES = {"IPv4": 4, "IPv6": 6}
_BIG = 1 << 130


@dataclasses.dataclass(frozen=True, order=True)
class ServiceBackend:
    """One ready endpoint address and the port a Service port resolved to on it."""

    addr: ruleset.AddrRange
    port: int
    node: str = ""


@dataclasses.dataclass(frozen=True, order=True)
class Frontend:
    """The virtual addresses of one Service port in one IP family, and its ready backends."""

    service: str
    family: int
    protocol: int
    port: int
    addrs: tuple[ruleset.AddrRange, ...]
    backends: tuple[ServiceBackend, ...]
    local_only: bool = False


@dataclasses.dataclass(frozen=True)
class Problem:
    """Bad input worth one log line: the object, its version, and what is wrong."""

    kind: str  # Service | EndpointSlice
    key: str
    resource_version: str
    message: str


@dataclasses.dataclass(frozen=True)
class ServiceIndex:
    """Every Service frontend of a snapshot (built once per pass, shared by every pod)."""

    frontends: tuple[Frontend, ...] = ()
    problems: tuple[Problem, ...] = ()

    @functools.cached_property
    def virtual_addrs(self) -> tuple[ruleset.AddrRange, ...]:
        """Every frontend's virtual address, canonical (computed once per index)."""
        return intervals.merge_addrs(a for f in self.frontends for a in f.addrs)


EMPTY = ServiceIndex()


@functools.lru_cache(maxsize=1 << 16)
def _address(ip: str) -> ruleset.AddrRange | None:
    """An endpoint or Service address, parsed once per process (endpoint churn re-reads the
    same addresses on every rebuild); None when unparsable."""
    try:
        return intervals.address_range(ip)
    except ValueError:
        return None


def _addrs(ips: Iterable[str], family: int) -> tuple[ruleset.AddrRange, ...]:
    out = []
    for ip in ips:
        addr = _address(ip)
        if addr is not None and addr.family == family:
            out.append(addr)
    return intervals.merge_addrs(out)


def build_index(
    services: Iterable[model.Service],
    slices: Iterable[model.EndpointSlice],
    pods: Mapping[str, model.Pod] | None = None,
) -> ServiceIndex:
    """The frontends of every Service with virtual addresses; `pods` only feeds `problems`."""
    services = sorted(services, key=lambda s: s.key)
    problems: list[Problem] = []
    by_service = _slices_by_service({s.key for s in services}, slices, pods, problems)
    frontends: list[Frontend] = []
    for service in services:
        frontends += _frontends(service, by_service.get(service.key, []), problems)
    return ServiceIndex(frontends=tuple(frontends), problems=tuple(problems))


def _slices_by_service(
    known: set[str],
    slices: Iterable[model.EndpointSlice],
    pods: Mapping[str, model.Pod] | None,
    problems: list[Problem],
) -> dict[str, list[model.EndpointSlice]]:
    """The EndpointSlices of each known Service; the others, and endpoints naming unknown
    pods, become problems."""
    by_service: dict[str, list[model.EndpointSlice]] = {}
    for piece in sorted(slices, key=lambda s: s.key):
        for error in piece.errors:
            problems.append(Problem("EndpointSlice", piece.key, piece.resource_version, error))
        service_key = f"{piece.namespace}/{piece.service}"
        if not piece.service or service_key not in known:
            problems.append(
                Problem(
                    "EndpointSlice",
                    piece.key,
                    piece.resource_version,
                    f"belongs to no known Service ({piece.service or 'no service-name label'}); "
                    "ignored",
                )
            )
            continue
        by_service.setdefault(service_key, []).append(piece)
        if pods is None:
            continue
        for endpoint in piece.endpoints:
            target = endpoint.target_pod
            if target is not None and target not in pods:
                problems.append(
                    Problem(
                        "EndpointSlice",
                        piece.key,
                        piece.resource_version,
                        f"endpoint {','.join(endpoint.addresses)} refers to unknown pod "
                        f"{target}; judged by its address only",
                    )
                )
    return by_service


def _frontends(
    service: model.Service, service_slices: list[model.EndpointSlice], problems: list[Problem]
) -> list[Frontend]:
    """One frontend per family with virtual addresses and per port of a known protocol."""
    for error in service.errors:
        problems.append(Problem("Service", service.key, service.resource_version, error))
    if service.headless or service.type == "ExternalName":
        return []
    if service.selector is None:
        problems.append(
            Problem(
                "Service",
                service.key,
                service.resource_version,
                "has no selector: only backends in hand-made EndpointSlices count, "
                "judged by address",
            )
        )
    frontends: list[Frontend] = []
    addresses = (*service.cluster_ips, *service.external_ips)
    for address_type, family in _FAMILIES.items():
        addrs = _addrs(addresses, family)
        if not addrs:
            continue
        family_slices = [s for s in service_slices if s.address_type == address_type]
        for port in service.ports:
            if port.protocol not in ruleset.PROTOCOL_NUMBERS:
                continue
            frontends.append(
                Frontend(
                    service=service.key,
                    family=family,
                    protocol=ruleset.PROTOCOL_NUMBERS[port.protocol],
                    port=port.port,
                    addrs=addrs,
                    backends=_backends(service, port, family_slices, problems),
                    local_only=service.internal_traffic_local,
                )
            )
    return frontends


def _backends(
    service: model.Service,
    port: model.ServicePort,
    slices: Sequence[model.EndpointSlice],
    problems: list[Problem],
) -> tuple[ServiceBackend, ...]:
    """The ready backends of one Service port, with the port it resolved to on each."""
    out: set[ServiceBackend] = set()
    for piece in slices:
        resolved = [p for p in piece.ports if p.name == port.name and p.protocol == port.protocol]
        number = resolved[0].port if resolved else None
        if number is None:
            if piece.endpoints:
                problems.append(
                    Problem(
                        "EndpointSlice",
                        piece.key,
                        piece.resource_version,
                        f"Service port {port.name or port.port}/{port.protocol} resolves to no "
                        "port in this slice; its endpoints do not count for it",
                    )
                )
            continue
        for endpoint in piece.endpoints:
            if not endpoint.ready:
                continue
            for ip in endpoint.addresses:
                addr = _address(ip)
                if addr is not None:
                    out.add(ServiceBackend(addr, number, endpoint.node_name or ""))
    return tuple(sorted(out))


class _Matcher:
    """Membership tests against one compiled direction, with its lookup keys built once."""

    def __init__(self, direction: ruleset.DirectionRuleset) -> None:
        self.direction = direction
        self.any_port = [(a.family, a.first, a.last) for a in direction.any_port_peers]
        self.keys = [(p.addrs.family, p.addrs.first) for p in direction.port_peers]

    def allows(self, addr: ruleset.AddrRange, protocol: int, port: int) -> bool:
        if not self.direction.isolated:
            return True
        family, value = addr.family, addr.first
        i = bisect.bisect_right(self.any_port, (family, value, _BIG)) - 1
        if i >= 0:
            fam, first, last = self.any_port[i]
            if fam == family and first <= value <= last:
                return True
        peers = self.direction.port_peers
        i = bisect.bisect_right(self.keys, (family, value)) - 1
        if i < 0:
            return False
        # Canonical elements are cut into disjoint address runs (one or more elements sharing
        # one address range, sorted), so only the run just before the key can hold the address.
        run = peers[i].addrs
        if run.family != family or not run.first <= value <= run.last:
            return False
        while i >= 0 and peers[i].addrs == run:
            element = peers[i]
            if element.protocol == protocol and element.ports.first <= port <= element.ports.last:
                return True
            i -= 1
        return False


def allows(
    direction: ruleset.DirectionRuleset, addr: ruleset.AddrRange, protocol: int, port: int
) -> bool:
    """Whether the compiled direction lets a packet to one address, protocol and port pass."""
    return _Matcher(direction).allows(addr, protocol, port)


def open_frontends(
    direction: ruleset.DirectionRuleset, index: ServiceIndex, node_name: str | None
) -> list[tuple[Frontend, bool]]:
    """The frontends this direction opens, each with whether ALL its backends are allowed."""
    out: list[tuple[Frontend, bool]] = []
    matcher = _Matcher(direction)
    for frontend in index.frontends:
        candidates = [
            b for b in frontend.backends if not frontend.local_only or b.node == (node_name or "")
        ]
        allowed = [b for b in candidates if matcher.allows(b.addr, frontend.protocol, b.port)]
        if allowed:
            out.append((frontend, len(allowed) == len(candidates)))
    return out


def translate(
    direction: ruleset.DirectionRuleset, index: ServiceIndex, node_name: str | None
) -> ruleset.DirectionRuleset:
    """`direction` without any Service's virtual addresses, plus the Service frontends whose
    allowed backends it reaches."""
    if not direction.isolated or not index.frontends:
        return direction
    translated = _translate_union(direction, index, node_name)
    per_policy = tuple(_translate_policy(p, index, node_name) for p in direction.per_policy)
    return dataclasses.replace(translated, per_policy=per_policy)


def _translate_policy(
    peers: ruleset.PolicyPeers, index: ServiceIndex, node_name: str | None
) -> ruleset.PolicyPeers:
    """One policy's own peers, translated as the union is (its hit counter must match the
    Service addresses the pod actually sends to)."""
    alone = ruleset.DirectionRuleset(True, peers.any_port_peers, peers.port_peers)
    done = _translate_union(alone, index, node_name)
    return ruleset.PolicyPeers(peers.policy, done.any_port_peers, done.port_peers)


def _translate_union(
    direction: ruleset.DirectionRuleset, index: ServiceIndex, node_name: str | None
) -> ruleset.DirectionRuleset:
    opened = open_frontends(direction, index, node_name)  # judged by the backends, as compiled
    vips = index.virtual_addrs
    any_port = intervals.subtract_addrs(direction.any_port_peers, vips)
    triples: list[intervals.Triple] = []
    covered = False
    for p in direction.port_peers:
        if not covered and _overlaps(p.addrs, vips):
            covered = True
        triples.extend((a, p.protocol, p.ports) for a in _minus(p.addrs, vips))
    if not opened and not covered and any_port == direction.any_port_peers:
        return direction
    for frontend, _complete in opened:
        port = ruleset.PortRange(frontend.port, frontend.port)
        triples.extend((a, frontend.protocol, port) for a in frontend.addrs)
    return dataclasses.replace(
        direction,
        any_port_peers=any_port,
        port_peers=intervals.canonical_peer_ports(triples, exclude=any_port),
    )


def _overlaps(addrs: ruleset.AddrRange, canonical: Sequence[ruleset.AddrRange]) -> bool:
    return _minus(addrs, canonical) != (addrs,)


def _minus(
    addrs: ruleset.AddrRange, canonical: Sequence[ruleset.AddrRange]
) -> tuple[ruleset.AddrRange, ...]:
    return intervals.subtract_addrs((addrs,), canonical)
