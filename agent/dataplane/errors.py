"""The dataplane's typed errors: what the worker reports on the wire (`kind`) and what the
agent handles, each defined once.

Why a module of their own: the drop reader and the change watcher enter namespaces through
`agent.dataplane.enter`, which raises `NetnsGone`, but they must not load the worker protocol
(its dataclasses and codec cost each helper megabytes: tests/unit/test_child_imports.py).
`agent.dataplane.protocol` re-exports these names for the agent and the worker. Pure.
"""

from __future__ import annotations

from typing import ClassVar


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


class ProtocolError(DataplaneError):
    """A line one side cannot read: not the wire format, another version of it, or a field
    that does not fit its type. The worker answers such a request with this error and goes on
    with the next line; the agent, meeting a reply it cannot read, restarts the worker."""

    kind = "protocol"


ERRORS: dict[str, type[DataplaneError]] = {
    cls.kind: cls for cls in (DataplaneError, NetnsGone, ApplyFailed, WorkerTimeout, ProtocolError)
}


def error_of(kind: object, message: str) -> DataplaneError:
    """The typed error a failed reply names (an unknown kind is a plain DataplaneError)."""
    return ERRORS.get(str(kind), DataplaneError)(message)
