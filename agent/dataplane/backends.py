"""The dataplane backends (`--backend nftables|iptables`) behind one small interface.

The reconciler, the sweep and `podseg cleanup` speak to a `Backend`: render a ruleset (pure)
into a `Program` with a fingerprint, apply it to a pod's namespace, inspect what a namespace
holds (fingerprint + digest, for adoption and drift), read the owner comment (for the sweep)
and delete everything podseg owns there. Each backend turns these into dataplane-worker
requests; only the worker enters namespaces.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

from agent.calc import ruleset
from agent.dataplane import client as dp_client
from agent.dataplane import netns
from agent.dataplane.ipt import render as render_ipt
from agent.dataplane.nft import incremental
from agent.dataplane.nft import render as render_nft

NAMES = ("nftables", "iptables")


@dataclasses.dataclass(frozen=True)
class Program:
    """A rendered ruleset: its fingerprint and what the backend's apply request carries."""

    fingerprint: str
    payload: Any


class Backend(Protocol):
    name: str

    def render(self, rs: ruleset.PodRuleset, interfaces: Sequence[str]) -> Program: ...

    async def apply(
        self, client: dp_client.WorkerClient, target: netns.Target, program: Program
    ) -> str | None: ...

    async def inspect(
        self, client: dp_client.WorkerClient, target: netns.Target
    ) -> tuple[str | None, str | None]: ...

    def patch_script(self, previous: Program, program: Program) -> str | None:
        """An incremental update from `previous` to `program`, or None when only a full
        apply will do (or the backend has no incremental updates)."""
        ...

    def examine_request(self, target: netns.Target, whole: bool = True) -> dict[str, Any]:
        """The worker request reading what a namespace holds, for batches (`WorkerClient.batch`;
        `dp_client.examined` reads its reply). Without `whole`, the reply may leave the digest out
        (None): enough to adopt by fingerprint."""
        ...

    def commit_request(
        self, target: netns.Target, program: Program, read_back: bool = False
    ) -> dict[str, Any]:
        """The worker request committing a whole ruleset, for batches (`dp_client.committed`
        reads its reply); with `read_back`, the reply always carries the digest of what the
        namespace holds after the commit."""
        ...

    async def comment(self, client: dp_client.WorkerClient, target: netns.Target) -> str | None: ...

    async def delete(self, client: dp_client.WorkerClient, target: netns.Target) -> None: ...


class Nftables:
    """`table inet podseg` (+ `table netdev podseg`), one libnftables transaction per apply."""

    name = "nftables"

    def render(self, rs: ruleset.PodRuleset, interfaces: Sequence[str]) -> Program:
        rendered = render_nft.render(rs, interfaces)
        return Program(rendered.fingerprint, rendered)

    async def apply(
        self, client: dp_client.WorkerClient, target: netns.Target, program: Program
    ) -> str | None:
        return await client.apply(target, _nft(program).script)

    async def inspect(
        self, client: dp_client.WorkerClient, target: netns.Target
    ) -> tuple[str | None, str | None]:
        return await client.inspect(target)

    def patch_script(self, previous: Program, program: Program) -> str | None:
        return incremental.patch(_nft(previous), _nft(program))

    def examine_request(self, target: netns.Target, whole: bool = True) -> dict[str, Any]:
        return {"op": "inspect" if whole else "glance", "path": target.path, "ino": target.ino}

    def commit_request(
        self, target: netns.Target, program: Program, read_back: bool = False
    ) -> dict[str, Any]:
        return {
            # "commit" reads back only when another commit slipped in; "apply" always does
            "op": "apply" if read_back else "commit",
            "path": target.path,
            "ino": target.ino,
            "script": _nft(program).script,
        }

    async def comment(self, client: dp_client.WorkerClient, target: netns.Target) -> str | None:
        reply = await client.request("comment", path=target.path, ino=target.ino)
        found = reply.get("comment")
        return str(found) if found else None

    async def delete(self, client: dp_client.WorkerClient, target: netns.Target) -> None:
        await client.apply(target, render_nft.delete_script())


class Iptables:
    """`PODSEG-` chains in table filter of both families, peers in ipsets (render_ipt)."""

    name = "iptables"

    def render(self, rs: ruleset.PodRuleset, interfaces: Sequence[str]) -> Program:
        rendered = render_ipt.render(rs, interfaces)
        payload = dataclasses.asdict(rendered)
        del payload["fingerprint"]
        return Program(rendered.fingerprint, payload)

    async def apply(
        self, client: dp_client.WorkerClient, target: netns.Target, program: Program
    ) -> str | None:
        return dp_client.committed(await client.request(**self.commit_request(target, program)))[0]

    async def inspect(
        self, client: dp_client.WorkerClient, target: netns.Target
    ) -> tuple[str | None, str | None]:
        fingerprint, digest, _ = dp_client.examined(
            await client.request(**self.examine_request(target))
        )
        return fingerprint, digest

    def patch_script(self, previous: Program, program: Program) -> str | None:
        return None  # ipsets are swapped whole, with the rules, in every apply

    def examine_request(self, target: netns.Target, whole: bool = True) -> dict[str, Any]:
        return {"op": "ipt_inspect", "path": target.path, "ino": target.ino}

    def commit_request(
        self, target: netns.Target, program: Program, read_back: bool = False
    ) -> dict[str, Any]:
        return {  # always read back
            "op": "ipt_apply",
            "path": target.path,
            "ino": target.ino,
            "rendered": program.payload,
        }

    async def comment(self, client: dp_client.WorkerClient, target: netns.Target) -> str | None:
        reply = await client.request("ipt_comment", path=target.path, ino=target.ino)
        found = reply.get("comment")
        return str(found) if found else None

    async def delete(self, client: dp_client.WorkerClient, target: netns.Target) -> None:
        await client.request("ipt_delete", path=target.path, ino=target.ino)


def _nft(program: Program) -> render_nft.Rendered:
    if not isinstance(program.payload, render_nft.Rendered):
        raise TypeError("not an nftables program")
    return program.payload


def get(name: str) -> Backend:
    """The backend called `name` (one of NAMES); ValueError otherwise."""
    if name == "nftables":
        return Nftables()
    if name == "iptables":
        return Iptables()
    raise ValueError(f"unknown backend {name!r}")
