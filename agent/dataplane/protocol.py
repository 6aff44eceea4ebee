"""The protocol between the agent and its dataplane worker: one `Op` per request kind, a typed
request and reply for each, and the errors, each defined once.

Why: the worker is a separate process (the agent's event loop never enters a namespace), so
requests and replies cross a pipe as JSON lines. Everything that crosses is declared here as
frozen dataclasses; `encode`, `decode`, `encode_request` and `decode_request` are the only code
that sees the dicts on the wire, so mypy checks every request and reply end to end. The agent
(`agent.dataplane.client`), the worker (`agent.dataplane.worker`) and the in-memory fake the
sync tests use all speak these types. Pure: no I/O.

A reply line is `{"id", "ok": true, "seconds", ...reply fields}` or `{"id", "ok": false,
"kind", "error"}`, where `kind` names the error class (`ERRORS`).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from agent.dataplane import netns

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

# The environment variable that tells the worker how many parts of a batch it may work on at
# once (each on its own thread, in its own namespace): the agent's `--dataplane-threads`,
# passed on when it starts the worker.
THREADS_ENV = "PODSEG_DATAPLANE_THREADS"


# -- errors -------------------------------------------------------------------------------
class DataplaneError(Exception):
    """Base of every dataplane failure the agent handles; `kind` names it on the wire."""

    kind: ClassVar[str] = "internal"


class NetnsGone(DataplaneError):
    """The namespace at the path is gone, or is not the one the caller meant (another inode,
    or the host namespace, which the worker never enters)."""

    kind = "netns_gone"


class ApplyFailed(DataplaneError):
    """nft, iptables-restore or ipset refused: nothing was committed, the previous ruleset
    stays in place."""

    kind = "apply"


class WorkerTimeout(DataplaneError):
    """The worker did not answer in time (or died); it has been killed and will be restarted."""

    kind = "timeout"


ERRORS: dict[str, type[DataplaneError]] = {
    cls.kind: cls for cls in (DataplaneError, NetnsGone, ApplyFailed, WorkerTimeout)
}


def error_of(kind: object, message: str) -> DataplaneError:
    """The typed error a failed reply names (an unknown kind is a plain DataplaneError)."""
    return ERRORS.get(str(kind), DataplaneError)(message)


# -- the ops -------------------------------------------------------------------------------
class Op(enum.StrEnum):
    SCAN = "scan"
    APPLY = "apply"
    COMMIT = "commit"
    PATCH = "patch"
    GENERATION = "generation"
    INSPECT = "inspect"
    GLANCE = "glance"
    SNAPSHOT = "snapshot"
    COMMENT = "comment"
    TABLES = "tables"
    FORGET = "forget"
    COUNTERS = "counters"
    CONNTRACK_LIST = "conntrack_list"
    CONNTRACK_DELETE = "conntrack_delete"
    CONNTRACK_MARK = "conntrack_mark"
    IPT_APPLY = "ipt_apply"
    IPT_INSPECT = "ipt_inspect"
    IPT_COMMENT = "ipt_comment"
    IPT_DELETE = "ipt_delete"
    IPT_PATCH = "ipt_patch"
    BATCH = "batch"
    PING = "ping"


# -- replies -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Scanned:
    """Every candidate namespace (named ones first), with its interfaces and addresses; and
    the addresses of the worker's own namespace (`host`, loopback out): with the DaemonSet's
    host network, the node's own addresses, including those no Node object lists (the CNI
    bridge's, from which the kubelet probes pods on a bridge network)."""

    candidates: tuple[netns.Candidate, ...]
    host: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Committed:
    """A whole ruleset is in the namespace. `digest` is the digest of what the namespace holds
    now (None: not read back, because the namespace's nftables generation moved by exactly
    this commit, so it holds what the script says); `generation` is the namespace's nftables
    generation after it (None with the iptables backend); `seconds` the worker's own time;
    `token` the generation token in the names of the iptables backend's sets (what a patch
    edits)."""

    digest: str | None
    generation: int | None
    seconds: float = 0.0
    token: str | None = None


@dataclasses.dataclass(frozen=True)
class Patched:
    """An incremental transaction: `applied` False when the namespace was not at the expected
    generation (nothing ran); `sole` when it was the only commit between two generation reads,
    so the agent can vouch for the result. `digest` (iptables backend): the digest of what the
    namespace holds after the patch, as `Examined.digest` reads it."""

    applied: bool
    generation: int | None
    sole: bool
    seconds: float = 0.0
    digest: str | None = None


@dataclasses.dataclass(frozen=True)
class Examined:
    """What a namespace holds of ours: the ruleset fingerprint (None: no table of ours), the
    digest of the owned tables' whole stateless listing (None when not read), the generation
    read before the listing (None when unknown or with iptables), and the base chains of
    others that could undo podseg's egress decision (`agent.dataplane.nft.hooks`)."""

    fingerprint: str | None
    digest: str | None
    generation: int | None
    foreign: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Held:
    """podseg's tables in a namespace as they are: `script` replaces them with exactly their
    present content when committed (None: no table of ours), `digest` as `Examined.digest`,
    `generation` read first, `comment` the owner comment (`podseg fp=... pod=<ns>/<name>`)."""

    script: str | None
    digest: str | None
    generation: int | None
    comment: str | None = None


@dataclasses.dataclass(frozen=True)
class Generation:
    generation: int


@dataclasses.dataclass(frozen=True)
class Comment:
    """The owner comment of podseg's table (`podseg fp=... pod=<ns>/<name>`), if any."""

    comment: str | None


@dataclasses.dataclass(frozen=True)
class Tables:
    """What podseg owns in a namespace: nftables tables (`inet podseg`, `netdev podseg`) and
    the iptables backend's objects (`iptables`, `ip6tables`, `ipset`)."""

    nftables: tuple[str, ...]
    iptables: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Count:
    """How many things an op touched (contexts forgotten, entries deleted or marked)."""

    count: int


@dataclasses.dataclass(frozen=True)
class Removed:
    removed: bool


@dataclasses.dataclass(frozen=True)
class Counters:
    """Packet counts of the named deny counters, per target key; a target whose namespace or
    table is gone is absent (the caller treats it as a reset)."""

    values: dict[str, dict[str, int]]


@dataclasses.dataclass(frozen=True)
class ConntrackEntry:
    """One conntrack entry of a namespace: its original tuple, mark, and the raw tuple (hex)
    that a delete sends back exactly as the kernel reported it."""

    family: int
    src: str
    dst: str
    proto: int
    sport: int | None
    dport: int | None
    mark: int
    key: str
    ct_id: int | None = None


@dataclasses.dataclass(frozen=True)
class ConntrackEntries:
    entries: tuple[ConntrackEntry, ...]


@dataclasses.dataclass(frozen=True)
class Pong:
    pid: int
    contexts: int


# -- requests ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Request(Generic[R]):
    """A request whose reply is an `R` (the dataclass named by `answer`)."""

    op: ClassVar[Op]
    answer: ClassVar[type[Any]]

    def decode_reply(self, raw: Mapping[str, Any]) -> R:
        value: R = decode(self.answer, raw)
        return value


@dataclasses.dataclass(frozen=True)
class InNetns(Request[R]):
    """A request about one namespace: its path, and its inode to make sure it is the one the
    agent means (None: whatever is at the path)."""

    path: str
    ino: int | None


@dataclasses.dataclass(frozen=True)
class Scan(Request[Scanned]):
    op = Op.SCAN
    answer = Scanned
    netns_dir: str
    proc: bool = True
    # Only these namespaces (the CNI plugin names a new pod's): no listing of the others.
    paths: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Apply(InNetns[Committed]):
    """Run an nft script as one transaction and read the result back (digest always set)."""

    op = Op.APPLY
    answer = Committed
    script: str


@dataclasses.dataclass(frozen=True)
class Commit(InNetns[Committed]):
    """Run an nft script as one transaction; read back only when another commit slipped in."""

    op = Op.COMMIT
    answer = Committed
    script: str


@dataclasses.dataclass(frozen=True)
class SetChange:
    """The elements deleted from and added to one peer set of `table inet podseg`.

    `kind` "any": an address interval set (a direction's any-port peers, or the peers of one
    port spec), elements (first, last); "exact": an `addr . proto . port` hash set (one
    address, one port), "ports": the same as an interval set, elements (first, last,
    protocol, first port, last port). An admin tier's sets (`agent.dataplane.nft.tierpatch`):
    "addrproto" an `addr . nf_proto` interval set, elements (first, last), and "services" an
    `inet_proto . inet_service` interval set, elements (protocol, first port, last port).
    Addresses as integers."""

    name: str
    family: int
    kind: str
    deleted: tuple[tuple[int, ...], ...] = ()
    added: tuple[tuple[int, ...], ...] = ()


@dataclasses.dataclass(frozen=True)
class Patch(InNetns[Patched]):
    """Run an incremental nft transaction if the namespace is still at `generation`.

    With `state` (the new ruleset fingerprint), the same transaction as `elements` and the
    fingerprint rule, sent as netlink messages (`agent.dataplane.nft.setelem`) rather than
    through libnftables, which reads an interval set's every element before changing it."""

    op = Op.PATCH
    answer = Patched
    script: str
    generation: int
    elements: tuple[SetChange, ...] = ()
    state: str = ""


@dataclasses.dataclass(frozen=True)
class ReadGeneration(InNetns[Generation]):
    op = Op.GENERATION
    answer = Generation


@dataclasses.dataclass(frozen=True)
class Inspect(InNetns[Examined]):
    """Fingerprint, digest of the whole owned listing, generation (nftables)."""

    op = Op.INSPECT
    answer = Examined


@dataclasses.dataclass(frozen=True)
class Glance(InNetns[Examined]):
    """Fingerprint and generation alone (digest None): what adoption at first contact needs."""

    op = Op.GLANCE
    answer = Examined


@dataclasses.dataclass(frozen=True)
class Snapshot(InNetns[Held]):
    """podseg's nftables tables as a loadable script: their stateless listing, which loads
    back into the very same listing (kept by an agent that cannot reach the API server, to put
    back what someone removes or edits: `agent.sync.holdover`)."""

    op = Op.SNAPSHOT
    answer = Held


@dataclasses.dataclass(frozen=True)
class ReadComment(InNetns[Comment]):
    op = Op.COMMENT
    answer = Comment


@dataclasses.dataclass(frozen=True)
class ListOwned(InNetns[Tables]):
    """Which podseg tables and iptables objects the namespace holds (for `podseg cleanup`)."""

    op = Op.TABLES
    answer = Tables


@dataclasses.dataclass(frozen=True)
class Forget(Request[Count]):
    """Close the cached contexts of these namespaces (None: all)."""

    op = Op.FORGET
    answer = Count
    inos: tuple[int, ...] | None


@dataclasses.dataclass(frozen=True)
class CounterTarget:
    key: str
    path: str
    ino: int | None


@dataclasses.dataclass(frozen=True)
class ReadCounters(Request[Counters]):
    """Named deny counters (nftables) or counting deny rules (iptables) of several pods."""

    op = Op.COUNTERS
    answer = Counters
    targets: tuple[CounterTarget, ...]
    backend: str = "nftables"


@dataclasses.dataclass(frozen=True)
class ConntrackList(InNetns[ConntrackEntries]):
    op = Op.CONNTRACK_LIST
    answer = ConntrackEntries


@dataclasses.dataclass(frozen=True)
class ConntrackDelete(InNetns[Count]):
    """Delete these entries; the count is of those still there."""

    op = Op.CONNTRACK_DELETE
    answer = Count
    entries: tuple[ConntrackEntry, ...]


@dataclasses.dataclass(frozen=True)
class ConntrackMark(InNetns[Count]):
    """OR `mark` into these entries' marks; the count is of those still there."""

    op = Op.CONNTRACK_MARK
    answer = Count
    entries: tuple[ConntrackEntry, ...]
    mark: int


@dataclasses.dataclass(frozen=True)
class IptProgram:
    """A rendered iptables ruleset (`agent.dataplane.ipt.render.Rendered` without its
    fingerprint): ipset restore input, the two iptables-restore bodies, the netdev table."""

    ipset: str
    v4: str
    v6: str
    netdev: str


@dataclasses.dataclass(frozen=True)
class IptApply(InNetns[Committed]):
    op = Op.IPT_APPLY
    answer = Committed
    program: IptProgram


@dataclasses.dataclass(frozen=True)
class IptPatch(InNetns[Patched]):
    """Element additions and deletions on the live ipsets of generation `token`, in one
    `ipset restore` (`agent.dataplane.ipt.incremental`): applied only if the fingerprint set
    still holds the fingerprint the script swaps out, vouched for (`sole`) only if every set
    then holds `counts[name]` elements. `digest` is the namespace's digest before the patch
    (its rules part carries over: a patch touches no rule)."""

    op = Op.IPT_PATCH
    answer = Patched
    script: str
    token: str
    digest: str
    counts: dict[str, int]


@dataclasses.dataclass(frozen=True)
class IptInspect(InNetns[Examined]):
    op = Op.IPT_INSPECT
    answer = Examined


@dataclasses.dataclass(frozen=True)
class IptComment(InNetns[Comment]):
    op = Op.IPT_COMMENT
    answer = Comment


@dataclasses.dataclass(frozen=True)
class IptDelete(InNetns[Removed]):
    op = Op.IPT_DELETE
    answer = Removed


@dataclasses.dataclass(frozen=True)
class Ping(Request[Pong]):
    op = Op.PING
    answer = Pong


@dataclasses.dataclass(frozen=True)
class Batch(Request["BatchReplies"]):
    """Several requests in one round trip, each answered on its own, in order."""

    op = Op.BATCH
    requests: tuple[Request[Any], ...]

    def decode_reply(self, raw: Mapping[str, Any]) -> BatchReplies:
        parts = raw.get("replies")
        if not isinstance(parts, list) or len(parts) != len(self.requests):
            raise DataplaneError("batch reply does not answer every request")
        return BatchReplies(
            tuple(parse_reply(req, part) for req, part in zip(self.requests, parts, strict=True))
        )


@dataclasses.dataclass(frozen=True)
class BatchReplies:
    replies: tuple[Any, ...]  # each the reply of its request, or its DataplaneError


REQUESTS: dict[Op, type[Request[Any]]] = {
    cls.op: cls
    for cls in (
        Scan,
        Apply,
        Commit,
        Patch,
        ReadGeneration,
        Inspect,
        Glance,
        Snapshot,
        ReadComment,
        ListOwned,
        Forget,
        ReadCounters,
        ConntrackList,
        ConntrackDelete,
        ConntrackMark,
        IptApply,
        IptInspect,
        IptComment,
        IptDelete,
        IptPatch,
        Batch,
        Ping,
    )
}


class Dataplane(Protocol):
    """What the sync layer needs of a dataplane: one request, or several in one round trip.
    `agent.dataplane.client.WorkerClient` is the real one; tests use an in-memory fake."""

    async def call(self, request: Request[R]) -> R: ...

    async def batch(self, requests: Sequence[Request[R]]) -> list[R | DataplaneError]: ...


# -- the wire ------------------------------------------------------------------------------
def parse_reply(request: Request[R], raw: Mapping[str, Any]) -> R | DataplaneError:
    """The typed reply of `request` from its reply line, or the error it reports."""
    if not raw.get("ok"):
        return error_of(raw.get("kind"), str(raw.get("error")))
    try:
        return request.decode_reply(raw)
    except (TypeError, ValueError, KeyError) as exc:
        return DataplaneError(f"malformed {request.op} reply: {exc}")


def encode_request(request: Request[Any]) -> dict[str, Any]:
    """The wire form of a request: its fields and its `op`."""
    fields = encode(request)
    assert isinstance(fields, dict)
    return {"op": request.op.value, **fields}


def decode_request(raw: Mapping[str, Any]) -> Request[Any]:
    """The request a wire dict stands for; ValueError for an unknown op or a bad field."""
    try:
        cls = REQUESTS[Op(str(raw.get("op")))]
    except ValueError as exc:
        raise ValueError(f"unknown op {raw.get('op')!r}") from exc
    if cls is Batch:
        parts = raw.get("requests")
        if not isinstance(parts, list):
            raise ValueError("batch without requests")
        return Batch(tuple(decode_request(part) for part in parts))
    fields = {k: v for k, v in raw.items() if k not in ("op", "id")}
    request: Request[Any] = decode(cls, fields)
    return request


def encode(value: Any) -> Any:
    """JSON-ready form of a dataclass (recursively), tuple, dict, enum or plain value."""
    if isinstance(value, Request) and isinstance(value, Batch):
        return {"requests": [encode_request(r) for r in value.requests]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    return value


def decode(tp: Any, value: Any) -> Any:
    """`value` (wire form) as an instance of type `tp`; TypeError/ValueError when it does not
    fit. Handles the shapes this protocol uses: dataclasses, tuple[X, ...], dict[str, X],
    X | None, and int, float, str, bool."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors: list[str] = []
        for option in options:
            if option is type(None):
                continue
            try:
                return decode(option, value)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise TypeError("; ".join(errors) or f"{value!r} fits no option of {tp}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        item = typing.get_args(tp)[0]
        return tuple(decode(item, v) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        _, item = typing.get_args(tp)
        return {str(k): decode(item, v) for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise TypeError(f"expected an object for {tp.__name__}")
        hints = _hints(tp)
        kwargs = {
            f.name: decode(hints[f.name], value[f.name])
            for f in dataclasses.fields(tp)
            if f.init and f.name in value
        }
        return tp(**kwargs)
    return _scalar(tp, value)


@functools.cache
def _hints(tp: type) -> dict[str, Any]:
    return typing.get_type_hints(tp)


def _scalar(tp: Any, value: Any) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    else:
        raise TypeError(f"unsupported type {tp!r}")
    raise TypeError(f"expected {tp.__name__}, got {type(value).__name__}")
