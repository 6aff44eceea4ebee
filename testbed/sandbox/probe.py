"""Connectivity probes between sandbox pods, and reachability matrices in the upstream style.

A probe always starts inside the source pod (its pod process is the client), so the source's
egress rules and the destination's ingress rules both apply, as for a real pod. A matrix sends
one batch to every source pod first and collects the answers afterwards, so all pods probe at
once and a matrix costs about one probe timeout (per round: matrices with more than about
PROBES_PER_SECOND x timeout cells are split into rounds, see `probe_matrix`).

Verdicts are the pod process's: `ok`, `timeout` (silently blocked), `refused`, `eperm` (blocked
where the sending application sees it, which podseg must not cause) or `error:<text>`.
Matrix keys are `(source key, destination key, port, proto)` with pod keys `namespace/name`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from testbed.sandbox import podclient, topology

MatrixKey = tuple[str, str, int, str]
Matrix = dict[MatrixKey, str]

OK = "ok"
TIMEOUT = "timeout"
REFUSED = "refused"
EPERM = "eperm"
MISSING = "missing"
# A conservative share of what the pod processes answer on a 2-core machine (~7,000 probes/s
# when otherwise idle; UDP needs the destination's Python loop, TCP only the kernel).
PROBES_PER_SECOND = 2000
_SLACK = 10.0  # beyond the probe timeout, for pod processes to be scheduled and to answer
_SYMBOLS = {OK: ".", TIMEOUT: "X", REFUSED: "R", EPERM: "P", MISSING: "-"}
LEGEND = ". ok  X timeout (blocked)  R refused  P eperm  E error  - not probed"


@dataclasses.dataclass(frozen=True, order=True)
class Mismatch:
    """One cell where the observed verdict differs from the expected one."""

    src: str
    dst: str
    port: int
    proto: str
    expected: str
    actual: str

    def __str__(self) -> str:
        return (
            f"{self.src} -> {self.dst} {self.proto}/{self.port}: "
            f"expected {self.expected}, got {self.actual}"
        )


def _process(pod: topology.SandboxPod) -> podclient.PodProcess:
    if pod.process is None:
        raise ValueError(f"pod {pod.key} has no running pod process")
    return pod.process


def probe(
    src: topology.SandboxPod,
    dst_ip: str,
    port: int,
    proto: str = "tcp",
    timeout: float = 1.0,
) -> str:
    """Probe `dst_ip:port/proto` from inside `src` and return the verdict."""
    answer = _process(src).request(
        {"probes": [{"dst": dst_ip, "port": port, "proto": proto, "timeout": timeout}]},
        timeout + _SLACK,
    )
    return str(_results(src, answer)[0]["verdict"])


def matrix_keys(
    pods: Sequence[topology.SandboxPod],
    *,
    ports: Iterable[int] = (80, 81),
    protocols: Iterable[str] = ("tcp", "udp"),
    family: int = 4,
    destinations: Sequence[topology.SandboxPod] | None = None,
) -> list[MatrixKey]:
    """The cells `probe_matrix` fills with the same arguments, in its order.

    Pods without an address of `family` are left out as sources and destinations.
    """
    sources = [pod for pod in pods if pod.address(family) is not None]
    targets = [pod for pod in (destinations or pods) if pod.address(family) is not None]
    return [
        (src.key, dst.key, port, proto)
        for src in sources
        for dst in targets
        for port in ports
        for proto in protocols
    ]


def expected_matrix(
    pods: Sequence[topology.SandboxPod],
    allowed: Callable[[str, str, int, str], bool] | None = None,
    *,
    blocked: str = TIMEOUT,
    ports: Iterable[int] = (80, 81),
    protocols: Iterable[str] = ("tcp", "udp"),
    family: int = 4,
    destinations: Sequence[topology.SandboxPod] | None = None,
) -> Matrix:
    """Build an expectation: `ok` where `allowed(src, dst, port, proto)` (default: everywhere),
    `blocked` elsewhere, over the same cells as `probe_matrix`."""
    keys = matrix_keys(
        pods, ports=ports, protocols=protocols, family=family, destinations=destinations
    )
    return {key: OK if allowed is None or allowed(*key) else blocked for key in keys}


def probe_matrix(
    pods: Sequence[topology.SandboxPod],
    *,
    ports: Iterable[int] = (80, 81),
    protocols: Iterable[str] = ("tcp", "udp"),
    family: int = 4,
    timeout: float = 1.0,
    destinations: Sequence[topology.SandboxPod] | None = None,
    max_probes_per_round: int | None = None,
) -> Matrix:
    """Probe from every pod to every pod (or to `destinations`), all sources at once.

    Includes each pod probing its own address (the matrix diagonal), as upstream does. Large
    matrices run in rounds of at most `max_probes_per_round` probes (default: what the pod
    processes can answer well within `timeout`, see PROBES_PER_SECOND), so CPU starvation is
    never mistaken for a blocked connection; each round costs at most about `timeout`.
    """
    ports, protocols = tuple(ports), tuple(protocols)
    keys = matrix_keys(
        pods, ports=ports, protocols=protocols, family=family, destinations=destinations
    )
    by_key = {pod.key: pod for pod in (*pods, *(destinations or ()))}
    per_round = max_probes_per_round or max(int(PROBES_PER_SECOND * timeout), 100)
    matrix: Matrix = {}
    for first in range(0, len(keys), per_round):
        matrix.update(_probe_round(keys[first : first + per_round], by_key, family, timeout))
    return matrix


def probe_cells(
    cells: Sequence[MatrixKey],
    pods: Mapping[str, topology.SandboxPod],
    *,
    family: int = 4,
    timeout: float = 1.0,
) -> Matrix:
    """Probe only these `(source, destination, port, proto)` cells (pod keys of `pods`), all
    sources at once, in rounds like `probe_matrix`."""
    per_round = max(int(PROBES_PER_SECOND * timeout), 100)
    matrix: Matrix = {}
    for first in range(0, len(cells), per_round):
        matrix.update(_probe_round(cells[first : first + per_round], pods, family, timeout))
    return matrix


def _probe_round(
    keys: Sequence[MatrixKey],
    by_key: Mapping[str, topology.SandboxPod],
    family: int,
    timeout: float,
) -> Matrix:
    """Send every source its batch, then collect the answers: all sources probe at once."""
    per_source: dict[str, list[MatrixKey]] = {}
    for key in keys:
        per_source.setdefault(key[0], []).append(key)
    sent: list[tuple[topology.SandboxPod, str, list[MatrixKey]]] = []
    for src_key, cells in per_source.items():
        src = by_key[src_key]
        process = _process(src)
        probes = [
            {"dst": by_key[dst].address(family), "port": port, "proto": proto, "timeout": timeout}
            for _, dst, port, proto in cells
        ]
        request_id = process.new_id()
        process.send({"id": request_id, "probes": probes})
        sent.append((src, request_id, cells))
    deadline = time.monotonic() + timeout + _SLACK
    matrix: Matrix = {}
    for src, request_id, cells in sent:
        results = _results(src, _process(src).receive(request_id, deadline))
        if len(results) != len(cells):
            raise podclient.PodProcessError(f"pod {src.key}: {len(results)} results for {cells}")
        for key, result in zip(cells, results, strict=True):
            matrix[key] = str(result["verdict"])
    return matrix


def _results(src: topology.SandboxPod, answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    results = answer.get("results")
    if not isinstance(results, list):
        raise podclient.PodProcessError(f"pod {src.key} answered {answer!r}")
    return results


def diff_matrix(
    expected: Mapping[MatrixKey, str], actual: Mapping[MatrixKey, str]
) -> list[Mismatch]:
    """Return every cell whose verdicts differ (a cell absent on one side counts as `missing`)."""
    keys = sorted(set(expected) | set(actual))
    return [
        Mismatch(*key, expected=expected.get(key, MISSING), actual=actual.get(key, MISSING))
        for key in keys
        if expected.get(key, MISSING) != actual.get(key, MISSING)
    ]


def _symbol(verdict: str) -> str:
    return _SYMBOLS.get(verdict, "E")


def format_matrix(
    matrix: Mapping[MatrixKey, str],
    *,
    expected: Mapping[MatrixKey, str] | None = None,
    title: str = "",
) -> str:
    """Render one table per port/protocol: rows are sources, columns destinations.

    With `expected`, a cell whose verdict differs is marked with `*` after its symbol.
    """
    sources: dict[str, None] = {}
    destinations: dict[str, None] = {}
    tables: dict[tuple[int, str], None] = {}
    for src, dst, port, proto in matrix:
        sources[src] = None
        destinations[dst] = None
        tables[(port, proto)] = None
    width = max((len(key) for key in (*sources, *destinations)), default=1)
    lines = [title] if title else []
    lines.append(f"legend: {LEGEND}" + ("  * differs from expected" if expected else ""))
    for port, proto in sorted(tables, key=lambda table: (table[1], table[0])):
        lines.append("")
        lines.append(f"{proto}/{port}")
        lines.append(" ".join(["-".ljust(width), *(dst.ljust(width) for dst in destinations)]))
        for src in sources:
            cells = []
            for dst in destinations:
                key = (src, dst, port, proto)
                verdict = matrix.get(key, MISSING)
                cell = _symbol(verdict)
                if expected is not None and expected.get(key, MISSING) != verdict:
                    cell += "*"
                cells.append(cell.ljust(width))
            lines.append(" ".join([src.ljust(width), *cells]).rstrip())
    return "\n".join(lines)


def format_diff(expected: Mapping[MatrixKey, str], actual: Mapping[MatrixKey, str]) -> str:
    """Render the observed matrix marked against the expectation, then the differing cells."""
    mismatches = diff_matrix(expected, actual)
    head = format_matrix(actual, expected=expected, title="observed (* = differs from expected)")
    body = "\n".join(str(mismatch) for mismatch in mismatches) or "no differences"
    return f"{head}\n\n{len(mismatches)} differences:\n{body}"


class HeldConnection:
    """A long-lived TCP connection from a pod to an echo port, exchanging a line every
    `interval`; `wait_broken` returns when an echo is lost (see podproc's `hold`)."""

    def __init__(
        self,
        src: topology.SandboxPod,
        dst_ip: str,
        port: int,
        *,
        interval: float = 0.02,
        timeout: float = 0.5,
    ) -> None:
        self.src = src
        self.process = _process(src)
        self.request_id = self.process.new_id()
        self.process.send(
            {
                "id": self.request_id,
                "hold": {"dst": dst_ip, "port": port, "interval": interval, "timeout": timeout},
            }
        )
        opened = self.process.receive(f"{self.request_id}.open", time.monotonic() + _SLACK)
        self.verdict = str(opened.get("verdict"))
        self.opened_at = float(opened.get("at") or 0.0)
        self._result: dict[str, Any] | None = None

    @property
    def connected(self) -> bool:
        return self.verdict == OK

    def wait_broken(self, timeout: float) -> dict[str, Any]:
        """The break report (`broken`, `last_ok`, `exchanges`); PodProcessError after
        `timeout` seconds if the connection still works."""
        if self._result is None:
            self._result = self.process.receive(self.request_id, time.monotonic() + timeout)
        return self._result

    def alive(self, within: float) -> bool:
        """True when the connection is still exchanging after `within` seconds."""
        try:
            self.wait_broken(within)
        except podclient.PodProcessError:
            return True
        return False

    def release(self) -> dict[str, Any]:
        """Close it (if still open) and return the final report."""
        if self._result is None:
            self.process.send({"id": self.process.new_id(), "release": self.request_id})
            return self.wait_broken(_SLACK)
        return self._result
