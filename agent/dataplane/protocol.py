"""The protocol between the agent and its dataplane worker: one `Op` per request kind, a typed
request and reply for each, the errors (`agent.dataplane.errors`), and their wire form.

Why: the worker is a separate process (the agent's event loop never enters a namespace), so
requests and replies cross a pipe as lines. Everything that crosses is declared here as frozen
dataclasses, encoded and decoded by msgspec against these very types (a field that does not
fit is an error, never a silently wrong value); `request_line`, `read_request`, `reply_line`
and `read_reply` are the only code that sees the wire, so mypy checks every request and reply
end to end. The agent (`agent.dataplane.client`), the worker (`agent.dataplane.worker`) and the
in-memory fake the sync tests use all speak these types. Pure: no I/O.

The line format and its version: "the wire", below.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import msgspec

from agent.dataplane import errors, netns

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

# The environment variable that tells the worker how many parts of a batch it may work on at
# once (each on its own thread, in its own namespace): the agent's `--dataplane-threads`,
# passed on when it starts the worker.
THREADS_ENV = "PODSEG_DATAPLANE_THREADS"


# -- errors (defined in `errors`, named here for the agent and the worker) ----------------
DataplaneError = errors.DataplaneError
NetnsGone = errors.NetnsGone
ApplyFailed = errors.ApplyFailed
WorkerTimeout = errors.WorkerTimeout
ProtocolError = errors.ProtocolError
ERRORS = errors.ERRORS
error_of = errors.error_of


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

    def read_reply(self, body: bytes) -> R:
        """The reply from its wire form (msgspec errors when it does not fit `answer`)."""
        value: R = _decoder(self.answer).decode(body)
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

    def read_reply(self, body: bytes) -> BatchReplies:
        parts = _PARTS.decode(body)
        if len(parts) != len(self.requests):
            raise ValueError("batch reply does not answer every request")
        return BatchReplies(
            tuple(
                _outcome(request, kind, part)
                for request, (kind, part) in zip(self.requests, parts, strict=True)
            )
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
# One JSON line per request and per reply (msgspec: the typed dataclasses above are encoded and
# decoded directly, checked field by field; JSON because addresses are integers of up to 128
# bits). A request line is `[VERSION, id, op, body]`, the body the request's fields as an
# object (a batch's: `[[op, body], ...]`); a reply line is `[VERSION, id, kind, body]`, `kind`
# OK with the reply's fields as body (a batch's: `[[kind, body], ...]`, one per part, in
# order), or an error kind (`ERRORS`) with the message as body. A line of another VERSION is
# answered with a ProtocolError, never acted upon.
VERSION = 2
OK = ""

_ENCODER = msgspec.json.Encoder()
_ENVELOPE = msgspec.json.Decoder(tuple[int, int, str, msgspec.Raw])
_PAIR = msgspec.json.Decoder(tuple[str, msgspec.Raw])
_PARTS = msgspec.json.Decoder(list[tuple[str, msgspec.Raw]])
_TEXT = msgspec.json.Decoder(str)
_UNREADABLE = (msgspec.DecodeError, ValueError, TypeError)  # ValidationError is a DecodeError


_DECODERS: dict[object, msgspec.json.Decoder[Any]] = {}


def _decoder(tp: type[Any]) -> msgspec.json.Decoder[Any]:
    """The decoder of `tp`, made once (making one inspects the type)."""
    decoder = _DECODERS.get(tp)
    if decoder is None:
        decoder = _DECODERS[tp] = msgspec.json.Decoder(tp)
    return decoder


class Unreadable(ProtocolError):
    """A request line the worker cannot act on; `ident` is its id when that much was read
    (0 otherwise), so the answer can still name the request."""

    def __init__(self, message: str, ident: int = 0) -> None:
        super().__init__(message)
        self.ident = ident


def _envelope(line: bytes) -> tuple[int, str, msgspec.Raw]:
    """The id, the kind or op and the body of a line; Unreadable when it is none."""
    try:
        version, ident, what, body = _ENVELOPE.decode(line)
    except msgspec.DecodeError as exc:
        other = _version_of(line)
        if other is None or other == VERSION:
            raise Unreadable(f"unreadable line: {exc}") from exc
        raise Unreadable(f"protocol version {other}, this side speaks {VERSION}") from exc
    if version != VERSION:
        raise Unreadable(f"protocol version {version}, this side speaks {VERSION}", ident)
    return ident, what, body


def _version_of(line: bytes) -> int | None:
    """The version a line of any shape says it is (None: not even that)."""
    try:
        raw = msgspec.json.decode(line)
    except msgspec.DecodeError:
        return None
    if isinstance(raw, list) and raw and isinstance(raw[0], int):
        return raw[0]
    return None


def _body(request: Request[Any]) -> Any:
    if isinstance(request, Batch):
        return [[part.op.value, _body(part)] for part in request.requests]
    return request


def encode_request(request: Request[Any]) -> bytes:
    """A request's wire form alone, `[op, body]` (a request line holds it after its id)."""
    return _ENCODER.encode([request.op.value, _body(request)])


def decode_request(data: bytes) -> Request[Any]:
    """The request `encode_request` wrote; Unreadable when it is not one."""
    try:
        op, body = _PAIR.decode(data)
    except _UNREADABLE as exc:
        raise Unreadable(f"unreadable request: {exc}") from exc
    return _request(op, body)


def _request(op: str, body: msgspec.Raw) -> Request[Any]:
    """The typed request of `op` from its body; Unreadable for an unknown op or a bad field."""
    try:
        cls = REQUESTS[Op(op)]
    except ValueError:
        raise Unreadable(f"unknown op {op!r}") from None
    try:
        if cls is Batch:
            return Batch(tuple(_request(o, b) for o, b in _PARTS.decode(body)))
        request: Request[Any] = _decoder(cls).decode(body)
    except _UNREADABLE as exc:
        raise Unreadable(f"malformed {op} request: {exc}") from exc
    return request


Parts = list["Request[Any] | DataplaneError"]  # a batch's parts, each readable or not


def request_line(ident: int, request: Request[Any]) -> bytes:
    """The line that sends `request` under `ident`."""
    return _ENCODER.encode([VERSION, ident, request.op.value, _body(request)]) + b"\n"


def read_request(line: bytes) -> tuple[int, Request[Any] | Parts]:
    """A request line's id and its request; a batch's parts one by one (a part that does not
    read is its own error, the others still run). Unreadable for a line that does not read."""
    ident, op, body = _envelope(line)
    if op != Op.BATCH:
        try:
            return ident, _request(op, body)
        except Unreadable as exc:
            raise Unreadable(str(exc), ident) from exc
    try:
        raw = _PARTS.decode(body)
    except _UNREADABLE as exc:
        raise Unreadable(f"malformed batch request: {exc}", ident) from exc
    parts: Parts = []
    for part_op, part in raw:
        try:
            parts.append(_request(part_op, part))
        except Unreadable as exc:
            parts.append(exc)
    return ident, parts


def _reply_body(outcome: Any) -> tuple[str, Any]:
    if isinstance(outcome, DataplaneError):
        return outcome.kind, str(outcome)
    if isinstance(outcome, BatchReplies):
        return OK, [_reply_body(part) for part in outcome.replies]
    return OK, outcome


def reply_line(ident: int, outcome: Any) -> bytes:
    """The line that answers request `ident` with `outcome`: its reply, its error, or a
    batch's `BatchReplies`."""
    kind, body = _reply_body(outcome)
    return _ENCODER.encode([VERSION, ident, kind, body]) + b"\n"


def read_reply(request: Request[R], ident: int, line: bytes) -> R | DataplaneError:
    """The typed reply of `request` (sent as `ident`) from its reply line, or the error it
    reports. ProtocolError when the line does not read, or answers another request (then the
    stream cannot be trusted: the caller restarts the worker)."""
    try:
        got, kind, body = _envelope(line)
    except Unreadable as exc:
        raise ProtocolError(f"reply to {request.op}: {exc}") from exc
    if got != ident:
        if got == 0 and kind != OK:  # the worker could not read our line
            return error_of(kind, _message(body))
        raise ProtocolError(f"reply to {request.op}: answers request {got}, not {ident}")
    return _outcome(request, kind, body)


def _outcome(request: Request[R], kind: str, body: msgspec.Raw) -> R | DataplaneError:
    if kind != OK:
        return error_of(kind, _message(body))
    try:
        return request.read_reply(body)
    except _UNREADABLE as exc:
        return DataplaneError(f"malformed {request.op} reply: {exc}")


def _message(body: msgspec.Raw) -> str:
    try:
        return _TEXT.decode(body)
    except msgspec.DecodeError:
        return bytes(body).decode(errors="replace")
