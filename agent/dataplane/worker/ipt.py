"""The worker's iptables-backend operations: apply, inspect, comment, delete, list what is
owned, and read the deny counters. ipset and iptables-restore run as children forked while
the worker is inside the pod's namespace (`agent.dataplane.ipt.commands`); the egress-drop
table goes through the namespace's nft context like the nftables backend's."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from agent.dataplane import protocol
from agent.dataplane.ipt import commands as ipt_commands
from agent.dataplane.ipt import render as render_ipt
from agent.dataplane.nft import hooks, pending
from agent.dataplane.worker import namespaces
from agent.dataplane.worker import nft as worker_nft

T = TypeVar("T")


def inside(ns: namespaces.Namespaces, path: str, ino: int | None, fn: Callable[[], T]) -> T:
    """Run `fn` with this process inside the namespace (children it starts inherit it)."""
    with ns.entered(path, ino):
        return fn()


def apply(ns: namespaces.Namespaces, request: protocol.IptApply) -> protocol.Committed:
    """Egress-drop table first (when wanted), then sets and rules, then cleanup."""
    path, ino, program = request.path, request.ino, request.program
    if program.netdev:
        ns.run(path, ino, program.netdev)
    fields = {"ipset": program.ipset, "v4": program.v4, "v6": program.v6}
    digest, token = inside(ns, path, ino, lambda: ipt_commands.apply(fields))
    _drop_pending(ns, path, ino)
    if not program.netdev:
        ns.run(path, ino, render_ipt.netdev_delete_script())
    return protocol.Committed(_with_netdev(ns, path, ino, digest), None, token=token)


def patch(ns: namespaces.Namespaces, request: protocol.IptPatch) -> protocol.Patched:
    """One `ipset restore` batch on the live sets (`agent.dataplane.ipt.incremental`); an
    ipset refusal is an ApplyFailed the agent answers with a whole apply."""
    vouched, digest = inside(
        ns,
        request.path,
        request.ino,
        lambda: ipt_commands.patch(request.script, request.token, request.digest, request.counts),
    )
    return protocol.Patched(applied=True, generation=None, sole=vouched, digest=digest)


def _with_netdev(ns: namespaces.Namespaces, path: str, ino: int | None, digest: str) -> str:
    """The digest of the iptables side (rules part, then sets part) with the netdev
    egress-drop table folded into the rules part, which a patch carries over."""
    return worker_nft.netdev_digest(ns, path, ino, digest[:16])[:16] + digest[16:]


def _drop_pending(ns: namespaces.Namespaces, path: str, ino: int | None) -> None:
    """podseg-cni's pending table (docs/cni.md) goes once the real rules are in: after them,
    so the namespace is never open in between (the nftables backend drops it in its commit)."""
    if f"table inet {pending.TABLE}" in ns.run(path, ino, "list tables"):
        ns.run(path, ino, pending.delete_script())


def inspect(ns: namespaces.Namespaces, request: protocol.IptInspect) -> protocol.Examined:
    """Fingerprint and digest of the owned iptables rules, their sets and the netdev
    egress-drop table (the whole owned state, as `inspect` for nftables); foreign hooks."""
    path, ino = request.path, request.ino
    fingerprint, digest = inside(ns, path, ino, ipt_commands.inspect)
    foreign = worker_nft.foreign_hooks(ns, path, ino, hooks.IPT_OWNED)
    if digest is None:
        return protocol.Examined(None, None, None, foreign)
    return protocol.Examined(fingerprint, _with_netdev(ns, path, ino, digest), None, foreign)


def comment(ns: namespaces.Namespaces, request: protocol.IptComment) -> protocol.Comment:
    def read() -> str | None:
        for family in (4, 6):
            found = render_ipt.parse_comment(ipt_commands.save(family))
            if found:
                return found
        return None

    return protocol.Comment(inside(ns, request.path, request.ino, read))


def delete(ns: namespaces.Namespaces, request: protocol.IptDelete) -> protocol.Removed:
    removed = inside(ns, request.path, request.ino, ipt_commands.delete)
    ns.run(request.path, request.ino, render_ipt.netdev_delete_script())
    return protocol.Removed(removed)


def owned(ns: namespaces.Namespaces, path: str, ino: int | None) -> tuple[str, ...]:
    return tuple(inside(ns, path, ino, ipt_commands.owned))


def counters(ns: namespaces.Namespaces, target: protocol.CounterTarget) -> dict[str, int] | None:
    """The per-rule packet counters of the counting deny rules, and the named counters of the
    netdev table (spoofed packets); None when the namespace is gone or holds no deny rule
    (not enforced here, as a missing nft table)."""
    try:
        values = inside(ns, target.path, target.ino, ipt_commands.counters)
    except (protocol.NetnsGone, ipt_commands.IptError, OSError):
        return None
    values.update(worker_nft.netdev_counters(ns, target.path, target.ino))
    return values or None
