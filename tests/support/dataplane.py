"""Short forms of dataplane requests for tests that drive the real worker: each sends one
typed request (`agent.dataplane.protocol`) about a target namespace."""

from __future__ import annotations

from agent.dataplane import backends, netns, protocol


async def apply(dp: protocol.Dataplane, target: netns.Target, script: str) -> protocol.Committed:
    """Run an nft script in the target namespace and read the result back."""
    return await dp.call(protocol.Apply(target.path, target.ino, script))


async def fingerprint(dp: protocol.Dataplane, target: netns.Target) -> str | None:
    """The fingerprint of podseg's ruleset in the namespace (None: no table of ours)."""
    return (await dp.call(protocol.Glance(target.path, target.ino))).fingerprint


async def inspect(dp: protocol.Dataplane, target: netns.Target) -> protocol.Examined:
    return await dp.call(protocol.Inspect(target.path, target.ino))


async def generation(dp: protocol.Dataplane, target: netns.Target) -> int:
    return (await dp.call(protocol.ReadGeneration(target.path, target.ino))).generation


async def patch(
    dp: protocol.Dataplane, target: netns.Target, script: str, expected: int
) -> protocol.Patched:
    return await dp.call(protocol.Patch(target.path, target.ino, script, expected))


async def counters(
    dp: protocol.Dataplane, targets: dict[str, netns.Target], backend: str = "nftables"
) -> dict[str, dict[str, int]]:
    request = protocol.ReadCounters(
        tuple(protocol.CounterTarget(k, t.path, t.ino) for k, t in targets.items()), backend
    )
    return (await dp.call(request)).values


async def conntrack(dp: protocol.Dataplane, target: netns.Target) -> list[protocol.ConntrackEntry]:
    return list((await dp.call(protocol.ConntrackList(target.path, target.ino))).entries)


async def pid(dp: protocol.Dataplane) -> int:
    """The worker's pid (and proof it answers)."""
    return (await dp.call(protocol.Ping())).pid


async def examine(
    dp: protocol.Dataplane, backend: backends.Backend, target: netns.Target
) -> tuple[str | None, str | None]:
    """(fingerprint, digest) of what the backend finds in the namespace."""
    found = await backends.examine(dp, backend, target)
    return found.fingerprint, found.digest


async def comment(
    dp: protocol.Dataplane, backend: backends.Backend, target: netns.Target
) -> str | None:
    return (await dp.call(backend.comment_request(target))).comment
