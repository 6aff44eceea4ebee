"""Thin wrapper around the `ip` tool, driven in batch mode.

The sandbox builds many namespaces at once; one `ip -b -` process per operation is far cheaper
than a process per command. A batch runs in the root namespace's context, but every command in it
either names a namespace (`netns add/del`, `link add ... netns A type veth peer ... netns B`,
which creates both ends directly inside their namespaces) or runs a nested batch file inside one
(`netns exec NS ip -b FILE`), so nothing of the sandbox ever exists in the root namespace.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
from collections.abc import Sequence

IP = "ip"
NETNS_DIR = "/run/netns"
_BATCH_TIMEOUT = 60.0


class IpError(RuntimeError):
    """An `ip` invocation failed; the message carries its stderr and the batch."""


def run_batch(lines: Sequence[str], *, force: bool = False) -> None:
    """Run `lines` as one `ip -b -` batch; raise IpError unless it succeeds (or `force`).

    With `force`, ip carries on past failing commands (used by cleanup, where some of the
    objects may already be gone) and the exit status is ignored.
    """
    if not lines:
        return
    command = [IP, "-force", "-b", "-"] if force else [IP, "-b", "-"]
    text = "".join(f"{line}\n" for line in lines)
    result = subprocess.run(
        command,
        input=text,
        capture_output=True,
        text=True,
        timeout=_BATCH_TIMEOUT,
        check=False,
    )
    if result.returncode != 0 and not force:
        raise IpError(f"ip batch failed ({result.returncode}): {result.stderr.strip()}\n{text}")


def nested_batch(workdir: pathlib.Path, netns: str, tag: str, lines: Sequence[str]) -> str:
    """Write `lines` to a file and return the batch command that runs them inside `netns`."""
    path = workdir / f"{netns}.{tag}.ip"
    path.write_text("".join(f"{line}\n" for line in lines))
    return f"netns exec {netns} {IP} -b {path}"


def sysctl_command(netns: str, settings: Sequence[tuple[str, str]]) -> str:
    """Return the batch command that sets sysctls inside `netns` (and only there)."""
    assignments = " ".join(f"{key}={value}" for key, value in settings)
    return f"netns exec {netns} sysctl -q -w {assignments}"


def list_netns() -> list[str]:
    """Return the names of the named network namespaces (the files under /run/netns)."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []
