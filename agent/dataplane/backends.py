"""The dataplane backends (`--backend nftables|iptables`) behind one small interface.

The sync layer, the sweep and `podseg cleanup` speak to a `Backend`: render a ruleset (pure)
into a `Program` with a fingerprint, and build the worker requests that commit it, read back
what a namespace holds (fingerprint + digest, for adoption and drift), read the owner comment
(for the sweep) and delete everything podseg owns there. Only the worker enters namespaces.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

from agent.calc import ruleset
from agent.dataplane import netns, protocol
from agent.dataplane.ipt import fastpatch as ipt_fastpatch
from agent.dataplane.ipt import incremental as ipt_incremental
from agent.dataplane.ipt import render as render_ipt
from agent.dataplane.nft import fastpatch, incremental, pending
from agent.dataplane.nft import render as render_nft

NAMES = ("nftables", "iptables")


@dataclasses.dataclass(frozen=True)
class Program:
    """A rendered ruleset: its fingerprint and what the backend's commit request carries.

    A program derived from the previous commit's (`Backend.derive`) also carries the element
    patch from it: `patch`, valid from the program of fingerprint `base` only."""

    fingerprint: str
    payload: render_nft.Rendered | protocol.IptProgram
    base: str | None = dataclasses.field(default=None, compare=False)
    patch: str | None = dataclasses.field(default=None, compare=False, repr=False)
    # nftables: the same patch as numbers, for the worker's netlink path
    elements: tuple[protocol.SetChange, ...] | None = dataclasses.field(
        default=None, compare=False, repr=False
    )
    # iptables: the canonical interfaces it was rendered for, and the layout a derived patch
    # needs (`ipt.fastpatch`; made on the first derive from this programme)
    interfaces: tuple[str, ...] | None = dataclasses.field(default=None, compare=False)
    layout: ipt_fastpatch.Layout | None = dataclasses.field(default=None, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Known:
    """What the agent knows of a namespace after its own last commit there: the nftables
    generation (nftables), the sets' generation token and the digest (iptables)."""

    generation: int | None
    token: str | None
    digest: str | None


class Backend(Protocol):
    name: str

    def render(self, rs: ruleset.PodRuleset, interfaces: Sequence[str]) -> Program: ...

    def derive(
        self,
        previous_rs: ruleset.PodRuleset | None,
        previous: Program | None,
        rs: ruleset.PodRuleset,
        interfaces: Sequence[str],
    ) -> Program:
        """`render(rs, interfaces)`, derived from `previous` (the rendering of `previous_rs`)
        with its element patch when only peer-set elements changed (no whole render, no
        whole diff); otherwise rendered."""
        ...

    def patch_script(self, previous: Program, program: Program) -> str | None:
        """An incremental update from `previous` to `program`, or None when only a full
        commit will do (or the backend has no incremental updates)."""
        ...

    def patch_request(
        self, target: netns.Target, program: Program, script: str, known: Known
    ) -> protocol.Request[protocol.Patched] | None:
        """The request running `script` (from `patch_script`) on a namespace of which the
        agent knows `known`; None when it does not know enough to patch safely."""
        ...

    def examine_request(
        self, target: netns.Target, whole: bool = True
    ) -> protocol.Request[protocol.Examined]:
        """The request reading what a namespace holds. Without `whole`, the reply may leave
        the digest out (None): enough to adopt by fingerprint."""
        ...

    def commit_request(
        self, target: netns.Target, program: Program, read_back: bool = False
    ) -> protocol.Request[protocol.Committed]:
        """The request committing a whole ruleset; with `read_back`, the reply always carries
        the digest of what the namespace holds after the commit."""
        ...

    def comment_request(self, target: netns.Target) -> protocol.Request[protocol.Comment]: ...

    def delete_requests(self, target: netns.Target) -> list[protocol.Request[Any]]: ...


class Nftables:
    """`table inet podseg` (+ `table netdev podseg`), one libnftables transaction per commit."""

    name = "nftables"

    def render(self, rs: ruleset.PodRuleset, interfaces: Sequence[str]) -> Program:
        rendered = render_nft.render(rs, interfaces)
        return Program(rendered.fingerprint, rendered)

    def derive(
        self,
        previous_rs: ruleset.PodRuleset | None,
        previous: Program | None,
        rs: ruleset.PodRuleset,
        interfaces: Sequence[str],
    ) -> Program:
        if previous is not None and previous_rs is not None:
            found = fastpatch.derive(previous_rs, _nft(previous), rs, interfaces)
            if found is not None:
                rendered = found.rendered
                return Program(
                    rendered.fingerprint,
                    rendered,
                    previous.fingerprint,
                    found.script,
                    found.changes,
                )
        return self.render(rs, interfaces)

    def patch_script(self, previous: Program, program: Program) -> str | None:
        if program.patch is not None and program.base == previous.fingerprint:
            return program.patch
        return incremental.patch(_nft(previous), _nft(program))

    def patch_request(
        self, target: netns.Target, program: Program, script: str, known: Known
    ) -> protocol.Request[protocol.Patched] | None:
        if known.generation is None:
            return None
        if program.elements is not None and script == program.patch:
            # derived from the element change: the worker sends it as netlink messages
            return protocol.Patch(
                target.path,
                target.ino,
                script,
                known.generation,
                program.elements,
                program.fingerprint,
            )
        return protocol.Patch(target.path, target.ino, script, known.generation)

    def examine_request(
        self, target: netns.Target, whole: bool = True
    ) -> protocol.Request[protocol.Examined]:
        if whole:
            return protocol.Inspect(target.path, target.ino)
        return protocol.Glance(target.path, target.ino)

    def commit_request(
        self, target: netns.Target, program: Program, read_back: bool = False
    ) -> protocol.Request[protocol.Committed]:
        # Commit reads back only when another commit slipped in; Apply always does. A whole
        # commit also removes podseg-cni's pending table, in the same transaction.
        script = pending.delete_script() + _nft(program).script
        if read_back:
            return protocol.Apply(target.path, target.ino, script)
        return protocol.Commit(target.path, target.ino, script)

    def comment_request(self, target: netns.Target) -> protocol.Request[protocol.Comment]:
        return protocol.ReadComment(target.path, target.ino)

    def delete_requests(self, target: netns.Target) -> list[protocol.Request[Any]]:
        script = render_nft.delete_script() + pending.delete_script()
        return [protocol.Apply(target.path, target.ino, script)]


class Iptables:
    """`PODSEG-` chains in table filter of both families, peers in ipsets (ipt.render)."""

    name = "iptables"

    def render(self, rs: ruleset.PodRuleset, interfaces: Sequence[str]) -> Program:
        rendered = render_ipt.render(rs, interfaces)
        program = protocol.IptProgram(
            ipset=rendered.ipset, v4=rendered.v4, v6=rendered.v6, netdev=rendered.netdev
        )
        ifaces = render_nft.canonical_interfaces(interfaces)
        return Program(rendered.fingerprint, program, interfaces=ifaces)

    def derive(
        self,
        previous_rs: ruleset.PodRuleset | None,
        previous: Program | None,
        rs: ruleset.PodRuleset,
        interfaces: Sequence[str],
    ) -> Program:
        ifaces = render_nft.canonical_interfaces(interfaces)
        if previous is not None and previous_rs is not None and previous.interfaces == ifaces:
            old = _ipt(previous)
            layout = previous.layout or ipt_fastpatch.layout_of(previous_rs, old, ifaces)
            if layout is not None:
                found = ipt_fastpatch.derive(
                    previous_rs, old, previous.fingerprint, layout, rs, ifaces
                )
                if found is not None:
                    return Program(
                        found.fingerprint,
                        found.program,
                        previous.fingerprint,
                        found.script,
                        interfaces=ifaces,
                        layout=found.layout,
                    )
        return self.render(rs, interfaces)

    def patch_script(self, previous: Program, program: Program) -> str | None:
        if program.patch is not None and program.base == previous.fingerprint:
            return program.patch
        return ipt_incremental.patch(
            _ipt(previous), previous.fingerprint, _ipt(program), program.fingerprint
        )

    def patch_request(
        self, target: netns.Target, program: Program, script: str, known: Known
    ) -> protocol.Request[protocol.Patched] | None:
        if known.token is None or known.digest is None:
            return None
        counts = ipt_incremental.counts(_ipt(program))
        return protocol.IptPatch(target.path, target.ino, script, known.token, known.digest, counts)

    def examine_request(
        self, target: netns.Target, whole: bool = True
    ) -> protocol.Request[protocol.Examined]:
        return protocol.IptInspect(target.path, target.ino)

    def commit_request(
        self, target: netns.Target, program: Program, read_back: bool = False
    ) -> protocol.Request[protocol.Committed]:
        if not isinstance(program.payload, protocol.IptProgram):
            raise TypeError("not an iptables program")
        return protocol.IptApply(target.path, target.ino, program.payload)  # always read back

    def comment_request(self, target: netns.Target) -> protocol.Request[protocol.Comment]:
        return protocol.IptComment(target.path, target.ino)

    def delete_requests(self, target: netns.Target) -> list[protocol.Request[Any]]:
        return [protocol.IptDelete(target.path, target.ino)]


async def commit(
    dataplane: protocol.Dataplane,
    backend: Backend,
    target: netns.Target,
    program: Program,
    read_back: bool = True,
) -> protocol.Committed:
    """Commit a rendered ruleset with `backend` (one request; passes batch theirs)."""
    return await dataplane.call(backend.commit_request(target, program, read_back=read_back))


async def examine(
    dataplane: protocol.Dataplane, backend: Backend, target: netns.Target
) -> protocol.Examined:
    """What `backend` finds of ours in the namespace (fingerprint, digest)."""
    return await dataplane.call(backend.examine_request(target))


async def delete(dataplane: protocol.Dataplane, backend: Backend, target: netns.Target) -> None:
    """Remove everything `backend` owns in the namespace (idempotent)."""
    for request in backend.delete_requests(target):
        await dataplane.call(request)


def _nft(program: Program) -> render_nft.Rendered:
    if not isinstance(program.payload, render_nft.Rendered):
        raise TypeError("not an nftables program")
    return program.payload


def _ipt(program: Program) -> protocol.IptProgram:
    if not isinstance(program.payload, protocol.IptProgram):
        raise TypeError("not an iptables program")
    return program.payload


def get(name: str) -> Backend:
    """The backend called `name` (one of NAMES); ValueError otherwise."""
    if name == "nftables":
        return Nftables()
    if name == "iptables":
        return Iptables()
    raise ValueError(f"unknown backend {name!r}")
