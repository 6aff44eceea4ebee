"""The worker's nftables operations: commit a ruleset (whole or incremental), read back what
a namespace holds (fingerprint, digest, generation), the owner comment, the owned tables, and
the deny counters. Each runs inside the pod's namespace through `Namespaces`."""

from __future__ import annotations

import functools
import hashlib
import os
import socket
from collections.abc import Callable

from agent.dataplane import netlink, protocol
from agent.dataplane.nft import firstfill, generation, hooks, libnft, pending, setelem
from agent.dataplane.nft import render as render_nft
from agent.dataplane.worker import namespaces, objects

TABLE = render_nft.TABLE


def _counted(
    ns: namespaces.Namespaces,
    path: str,
    ino: int | None,
    script: str,
    expected: int | None = None,
    send: Callable[[socket.socket], None] | None = None,
) -> tuple[int, int | None]:
    """Run `script` (or `send`) in the namespace between two reads of its generation:
    (before, after). With `expected`, nothing runs unless `before` is that generation (after
    is None)."""
    with ns.entered(path, ino) as ident:
        before = ns.generation(ident)
        if expected is not None and before != expected:
            return before, None
        if send is not None:
            try:
                send(ns.element_socket(ident))
            except protocol.ApplyFailed:
                ns.drop_socket(ident)  # whatever it still holds is nobody's answer
                raise
        else:
            ns.run_in(ident, script)
        return before, ns.generation(ident)


def apply(ns: namespaces.Namespaces, request: protocol.Apply) -> protocol.Committed:
    """Commit the script; the digest of what the kernel now holds (see `inspect`) and the
    namespace's generation read before that listing."""
    ns.run(request.path, request.ino, request.script)
    found = inspect(ns, protocol.Inspect(request.path, request.ino))
    return protocol.Committed(found.digest, found.generation)


def commit(ns: namespaces.Namespaces, request: protocol.Commit) -> protocol.Committed:
    """Commit a whole ruleset (a table replace). When the namespace's generation moved by
    exactly this commit, what the namespace holds is what the script says, so no read-back
    is needed (digest None: later checks go by generation, as after a patch); otherwise
    someone committed in between and the result is read back as `apply` does. A namespace
    without podseg's tables gets big peer sets in two steps (`firstfill`)."""
    moved = _first_fill(ns, request)
    if moved is None:
        before, after = _counted(ns, request.path, request.ino, request.script)
        moved = None if after is None else (before, after, 1)
    if moved is not None and (moved[1] - moved[0]) & generation.MASK == moved[2]:
        return protocol.Committed(None, moved[1])
    found = inspect(ns, protocol.Inspect(request.path, request.ino))
    return protocol.Committed(found.digest, found.generation)


def _first_fill(ns: namespaces.Namespaces, request: protocol.Commit) -> tuple[int, int, int] | None:
    """The first commit in a namespace without podseg's tables, in `firstfill`'s two steps:
    (generation before, after, commits made); None (nothing done) when a table is there or
    the script does not split. ApplyFailed when step 2 fails: the tables of step 1 stay,
    their peer sets empty (they allow nothing) and chain `state` without a fingerprint (the
    agent replaces them)."""
    with ns.entered(request.path, request.ino) as ident:
        sock = ns.element_socket(ident)
        try:
            held = _tables(sock, _sequence(ns))
        except OSError as exc:
            ns.drop_socket(ident)
            raise protocol.ApplyFailed(f"table listing: {exc}") from exc
        if ("inet", TABLE) in held or ("netdev", TABLE) in held:
            return None
        parts = firstfill.split(request.script)
        if parts is None:
            return None
        drop = pending.TABLE if parts.pending and ("inet", pending.TABLE) in held else None
        data, acked = setelem.fill_batch(
            TABLE, render_nft.STATE_CHAIN, parts.state, parts.fills, _sequence(ns), drop
        )
        if not _room(sock, len(data)):
            return None  # step 2 would not fit in one datagram: the whole script does it
        before = ns.generation(ident)
        _run_alone(ns, parts.script)
        try:
            _send_batch(data, acked, sock)
        except protocol.ApplyFailed:
            ns.drop_socket(ident)  # whatever it still holds is nobody's answer
            raise
        return before, ns.generation(ident), 2


def _run_alone(ns: namespaces.Namespaces, script: str) -> None:
    """Run `script` in the namespace the thread is in with a context of its own, closed at
    once. Why not the namespace's kept context: a context that ran a big script is closed after
    the request (`Namespaces.shed`), and closing one waits in the kernel for the clean-up of
    any transaction that deleted something; closed now, before step 2 removes a pending
    table, nothing of ours is left to wait for."""
    with ns.lock:  # libnftables initialises its globals on first use
        ctx = libnft.Context(libnft.OUTPUT_TERSE)
    try:
        ctx.run(script)
    finally:
        ctx.close()


def _tables(sock: socket.socket, seq: int) -> set[tuple[str, str]]:
    """(family, name) of every table of the namespace the socket belongs to."""
    sock.send(tables_request(seq))
    return {parse_table(body) for _, body in netlink.responses(sock, seq)}


NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETTABLE = 1
NFTA_TABLE_NAME = 1
FAMILIES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}


def tables_request(seq: int) -> bytes:
    """A dump of every table of the namespace (NFT_MSG_GETTABLE, every family)."""
    kind = netlink.nfnl_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETTABLE)
    flags = netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP
    return netlink.message(kind, flags, seq, netlink.nfgen(socket.AF_UNSPEC))


def parse_table(body: bytes) -> tuple[str, str]:
    """(family, name) of one dumped table (an unknown family as its number)."""
    if len(body) < netlink.NFGENMSG.size:
        raise netlink.TruncatedError("nfgenmsg cut short")
    number = netlink.NFGENMSG.unpack_from(body)[0]
    name = netlink.attrs(body, netlink.NFGENMSG.size).get(NFTA_TABLE_NAME, b"")
    return FAMILIES.get(number, str(number)), name.rstrip(b"\0").decode(errors="replace")


SO_SNDBUFFORCE = 32  # socket(7): SO_SNDBUF may not exceed wmem_max; this may (CAP_NET_ADMIN)


def _room(sock: socket.socket, size: int) -> bool:
    """Whether the socket's send buffer holds a datagram of `size` bytes, made so if it can
    be (one transaction is one datagram; the kernel refuses one bigger than the buffer)."""
    wanted = size + (64 << 10)
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < wanted:
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, wanted)
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= wanted
    except OSError:  # no CAP_NET_ADMIN: the buffer stays as it is
        return False


def patch(ns: namespaces.Namespaces, request: protocol.Patch) -> protocol.Patched:
    """Run an incremental transaction only on tables nobody else committed to since the
    agent's last commit (generation `expected`), and report whether the commit was the
    only one (`sole`): otherwise the agent cannot vouch for the result and replaces it."""
    send = None
    if request.state:
        data, acked = setelem.batch(
            TABLE,
            render_nft.STATE_CHAIN,
            f"podseg state={request.state}",
            request.elements,
            _sequence(ns),
        )
        if len(data) <= MAX_NETLINK_BATCH:
            send = functools.partial(_send_batch, data, acked)
    before, after = _counted(
        ns, request.path, request.ino, request.script, request.generation, send
    )
    if after is None:
        return protocol.Patched(applied=False, generation=before, sole=False)
    return protocol.Patched(applied=True, generation=after, sole=generation.follows(before, after))


MAX_NETLINK_BATCH = 1 << 16  # bigger patches go through libnftables (one datagram each)


def _send_batch(data: bytes, acked: list[int], sock: socket.socket) -> None:
    """Send one nfnetlink transaction and wait for every ack; ApplyFailed (nothing committed:
    the kernel aborts the whole batch) on any error."""
    try:
        sock.send(data)
        pending, errors = set(acked), []
        while pending:
            for header, body in netlink.messages(sock.recv(1 << 16)):
                if header.type == netlink.NLMSG_ERROR and header.seq in pending:
                    pending.discard(header.seq)
                    code = netlink.error_code(body)
                    if code:
                        errors.append(f"message {header.seq}: {os.strerror(code)}")
        if errors:
            raise protocol.ApplyFailed("element patch refused: " + "; ".join(errors))
    except (OSError, netlink.MalformedError) as exc:
        raise protocol.ApplyFailed(f"element patch: {exc}") from exc


def read_generation(
    ns: namespaces.Namespaces, request: protocol.ReadGeneration
) -> protocol.Generation:
    with ns.entered(request.path, request.ino) as ident:
        return protocol.Generation(ns.generation(ident))


def listing(
    ns: namespaces.Namespaces,
    path: str,
    ino: int | None,
    family: str,
    flags: int = libnft.OUTPUT_TERSE,
) -> str | None:
    """nft's listing of our table of `family` in the namespace; None when there is none."""
    try:
        return ns.run(path, ino, f"list table {family} {render_nft.TABLE}", flags=flags)
    except libnft.NftError:
        return None


def foreign_hooks(
    ns: namespaces.Namespaces,
    path: str,
    ino: int | None,
    ours: hooks.Owned = hooks.NFT_OWNED,
) -> tuple[str, ...]:
    """The base chains of others in the namespace that could undo podseg's egress decision
    (`agent.dataplane.nft.hooks`); a listing that does not parse counts as one (fail
    closed: the agent then drops denied egress where no chain can undo it)."""
    text = ns.run(path, ino, "list chains", flags=libnft.OUTPUT_JSON)
    try:
        return hooks.foreign(text, ours)
    except ValueError as exc:
        return (f"unreadable chain listing: {exc}",)


def glance(ns: namespaces.Namespaces, request: protocol.Glance) -> protocol.Examined:
    """First contact: the ruleset fingerprint alone (the one rule of chain `state`, not a
    listing of every set), the generation, read first, and the foreign hooks. ~0.5 ms against
    ~2 ms for `inspect` of a table with a few hundred elements: it is what adoption needs."""
    path, ino = request.path, request.ino
    gen = read_generation(ns, protocol.ReadGeneration(path, ino)).generation
    try:
        text = ns.run(path, ino, f"list chain inet {render_nft.TABLE} {render_nft.STATE_CHAIN}")
    except libnft.NftError:  # no table (or no chain: not ours, or an older format)
        text = ""
    foreign = foreign_hooks(ns, path, ino)
    return protocol.Examined(render_nft.parse_fingerprint(text), None, gen, foreign)


def inspect(ns: namespaces.Namespaces, request: protocol.Inspect) -> protocol.Examined:
    """The owned tables' fingerprint, a digest of their whole kernel listing, and the
    foreign hooks.

    The listing is stateless (no counter values), so the digest changes only when a rule,
    set element, chain or table changes: an edit that keeps our comment is still caught.
    """
    path, ino = request.path, request.ino
    gen = read_generation(ns, protocol.ReadGeneration(path, ino)).generation  # read first
    foreign = foreign_hooks(ns, path, ino)
    inet = listing(ns, path, ino, "inet", libnft.OUTPUT_STATELESS)
    if inet is None:
        return protocol.Examined(None, None, gen, foreign)
    netdev = listing(ns, path, ino, "netdev", libnft.OUTPUT_STATELESS) or ""
    digest = _digest(inet, netdev)
    return protocol.Examined(render_nft.parse_fingerprint(inet), digest, gen, foreign)


def snapshot(ns: namespaces.Namespaces, request: protocol.Snapshot) -> protocol.Held:
    """podseg's tables as a script that puts them back exactly (their stateless listing after
    the delete prelude: loading it lists the same again), with `inspect`'s digest."""
    path, ino = request.path, request.ino
    gen = read_generation(ns, protocol.ReadGeneration(path, ino)).generation
    inet = listing(ns, path, ino, "inet", libnft.OUTPUT_STATELESS)
    if inet is None:
        return protocol.Held(None, None, gen)
    netdev = listing(ns, path, ino, "netdev", libnft.OUTPUT_STATELESS) or ""
    script = render_nft.delete_script() + inet + netdev
    return protocol.Held(script, _digest(inet, netdev), gen, render_nft.parse_comment(inet))


def _digest(inet: str, netdev: str) -> str:
    """The digest of podseg's tables from their stateless listings."""
    return hashlib.sha256(f"{inet}\n--netdev--\n{netdev}".encode()).hexdigest()[:32]


def netdev_digest(ns: namespaces.Namespaces, path: str, ino: int | None, digest: str) -> str:
    """`digest` (of the iptables side) extended with the netdev egress-drop table."""
    netdev = listing(ns, path, ino, "netdev", libnft.OUTPUT_STATELESS) or ""
    return hashlib.sha256(f"{digest}\n--netdev--\n{netdev}".encode()).hexdigest()[:32]


def comment(ns: namespaces.Namespaces, request: protocol.ReadComment) -> protocol.Comment:
    text = listing(ns, request.path, request.ino, "inet")
    return protocol.Comment(render_nft.parse_comment(text) if text is not None else None)


def owned_tables(ns: namespaces.Namespaces, path: str, ino: int | None) -> tuple[str, ...]:
    """The podseg tables of the namespace (`inet podseg`, `netdev podseg`, podseg-cni's
    `inet podseg-pending`; a table of that name in another family is not ours), from one
    listing of its table names: absence is an answer, not an error to interpret."""
    text = ns.run(path, ino, "list tables")
    found = []
    for line in text.splitlines():
        parts = line.split()
        ours = (["inet", TABLE], ["netdev", TABLE], ["inet", pending.TABLE])
        if parts[:1] == ["table"] and parts[1:] in ours:
            found.append(f"{parts[1]} {parts[2]}")
    return tuple(sorted(found))


def counters(ns: namespaces.Namespaces, target: protocol.CounterTarget) -> dict[str, int] | None:
    """Packet counts of podseg's named counters in one namespace (both tables: the netdev
    one counts spoofed packets); None when the namespace is gone."""
    found = _named_counters(ns, target.path, target.ino)
    if found is None:
        return None
    return {name: value for table in found.values() for name, value in table.items()}


def netdev_counters(ns: namespaces.Namespaces, path: str, ino: int | None) -> dict[str, int]:
    """The named counters of `table netdev podseg` alone (the iptables backend's drops of
    spoofed packets); empty when there is none."""
    return (_named_counters(ns, path, ino) or {}).get("netdev", {})


def _named_counters(
    ns: namespaces.Namespaces, path: str, ino: int | None
) -> dict[str, dict[str, int]] | None:
    """Packet counts of the named counters of podseg's tables, by table family (one dump of
    the namespace's counter objects over netlink: no libnftables cache, `objects`); None when
    the namespace is gone."""
    try:
        with ns.entered(path, ino) as ident:
            sock = ns.element_socket(ident)
            try:
                return objects.counters(sock, TABLE, _sequence(ns))
            except OSError:
                ns.drop_socket(ident)  # a half-read dump is nobody's answer
                raise
    except (protocol.NetnsGone, OSError):
        return None


def _sequence(ns: namespaces.Namespaces) -> int:
    """A fresh block of sequence numbers on the namespace's netfilter socket: a late answer
    to an earlier request never passes for this one's."""
    return ((next(ns.sequence) % (1 << 20)) << 12) or 1 << 12
