"""`podseg cleanup`: remove every table podseg owns from all pod namespaces of this node.

Why it exists: the agent never flushes its rules when it stops (fail closed), so uninstalling
podseg leaves `table inet podseg` / `table netdev podseg` in every pod namespace it programmed.
This command finds them and deletes them, for the uninstall path (docs/operations.md).

Like the agent, this process never enters a namespace itself: it drives the dataplane worker
(`dp_client.WorkerClient`), which scans the candidate namespaces (named ones in `--netns-dir`, then
`/proc/*/ns/net`, never the host namespace) and runs `render_nft.delete_script()` in each
namespace that holds an owned table, one atomic transaction per namespace. Tables of other
owners (any other name or family) are never touched. `--dry-run` only lists what would go.

Presence is read from the namespace's list of table names (`protocol.ListOwned`), so a
leftover table without podseg's fingerprint comment, or a lone `netdev` table, is found too.
Leftovers of the iptables backend (`PODSEG-` chains and their jumps in table filter of either
family, `PODSEG-` ipsets) are found and removed as well, whatever backend the agent ran with.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from collections.abc import Mapping
from typing import TextIO

import structlog

from agent import config
from agent.dataplane import client as dp_client
from agent.dataplane import netns, protocol
from agent.dataplane.nft import pending
from agent.dataplane.nft import render as render_nft

log = structlog.get_logger(__name__)

OWNED_TABLES = (
    f"inet {render_nft.TABLE}",
    f"netdev {render_nft.TABLE}",
    f"inet {pending.TABLE}",  # podseg-cni's, in a namespace the agent never answered for
)


OPTIONS = (
    *config.NETNS_OPTIONS,
    config.LOG_OPTIONS[0],  # --log-format; the report itself goes to stdout
)


@dataclasses.dataclass(frozen=True)
class Settings:
    netns_dir: str = "/var/run/netns"
    scan_proc: bool = True
    dry_run: bool = False
    log_format: str = "json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `podseg cleanup`; namespace discovery flags mean what they mean for agent."""
    parser.add_argument(
        "--dry-run", action="store_true", help="only list the namespaces and tables to remove"
    )
    config.add_options(parser, OPTIONS)


def settings_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> Settings:
    given = config.resolve(args, OPTIONS, os.environ if environ is None else environ)
    return Settings(
        netns_dir=given.get("netns_dir", Settings.netns_dir),
        scan_proc=given.get("no_proc_scan", Settings.scan_proc),
        dry_run=bool(args.dry_run),
        log_format=given.get("log_format", Settings.log_format),
    )


@dataclasses.dataclass(frozen=True)
class Owned:
    """One namespace holding podseg tables, as found by a scan."""

    path: str
    ino: int
    tables: tuple[str, ...]
    fingerprint: str | None
    addrs: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Report:
    scanned: int
    owned: tuple[Owned, ...]
    removed: tuple[Owned, ...] = ()
    vanished: tuple[Owned, ...] = ()
    failed: tuple[tuple[Owned, str], ...] = ()


async def _owned(dataplane: protocol.Dataplane, target: netns.Target) -> tuple[str, ...]:
    """Every podseg table (nftables) and iptables-backend object the namespace holds."""
    tables = await dataplane.call(protocol.ListOwned(target.path, target.ino))
    return tables.nftables + tables.iptables


async def _fingerprint(dataplane: protocol.Dataplane, target: netns.Target) -> str | None:
    found = await dataplane.call(protocol.Glance(target.path, target.ino))
    if found.fingerprint is not None:
        return found.fingerprint
    try:
        return (await dataplane.call(protocol.IptInspect(target.path, target.ino))).fingerprint
    except protocol.ApplyFailed:
        return None  # e.g. iptables not installed: only the nftables side is there


async def find_owned(dataplane: protocol.Dataplane, netns_dir: str, proc: bool) -> Report:
    """Every candidate namespace that holds at least one podseg table."""
    candidates = (await dataplane.call(protocol.Scan(netns_dir, proc))).candidates
    owned: list[Owned] = []
    unreadable: list[tuple[Owned, str]] = []
    for cand in candidates:
        target = netns.Target(cand.path, cand.ino, ())
        addrs = tuple(a for iface in cand.interfaces for a in iface.addrs)
        try:
            tables = await _owned(dataplane, target)
            if not tables:
                continue
            fingerprint = await _fingerprint(dataplane, target)
        except protocol.NetnsGone:
            continue  # the namespace went away since the scan: nothing left to clean there
        except protocol.DataplaneError as exc:
            unreadable.append((Owned(cand.path, cand.ino, (), None, addrs), str(exc)))
            log.error("cleanup_cannot_read", netns=cand.path, error=str(exc))
            continue
        owned.append(Owned(cand.path, cand.ino, tables, fingerprint, addrs))
    if not candidates:
        log.warning(
            "cleanup_no_namespaces",
            hint="none found: check --netns-dir, hostPID and CAP_SYS_ADMIN (setns)",
        )
    return Report(scanned=len(candidates), owned=tuple(owned), failed=tuple(unreadable))


async def remove(dataplane: protocol.Dataplane, found: Report) -> Report:
    """Delete the owned tables of each namespace in `found`, one transaction per namespace."""
    removed: list[Owned] = []
    vanished: list[Owned] = []
    failed: list[tuple[Owned, str]] = list(found.failed)
    script = render_nft.delete_script() + pending.delete_script()
    for item in found.owned:
        target = netns.Target(item.path, item.ino, ())
        try:
            await dataplane.call(protocol.Apply(target.path, target.ino, script))
            if set(item.tables) - set(OWNED_TABLES):
                await dataplane.call(protocol.IptDelete(target.path, target.ino))
            left = await _owned(dataplane, target)
        except protocol.NetnsGone:
            vanished.append(item)
            continue
        except protocol.DataplaneError as exc:
            failed.append((item, str(exc)))
            log.error("cleanup_failed", netns=item.path, error=str(exc))
            continue
        if left:
            failed.append((item, f"still present after delete: {', '.join(left)}"))
            log.error("cleanup_failed", netns=item.path, left=left)
            continue
        removed.append(item)
        log.info("cleanup_removed", netns=item.path, tables=list(item.tables))
    await dataplane.call(protocol.Forget(None))
    return dataclasses.replace(
        found, removed=tuple(removed), vanished=tuple(vanished), failed=tuple(failed)
    )


async def run(netns_dir: str, proc: bool, dry_run: bool, timeout: float = 10.0) -> Report:
    worker = dp_client.WorkerClient(timeout=timeout)
    try:
        found = await find_owned(worker, netns_dir, proc)
        return found if dry_run else await remove(worker, found)
    finally:
        await worker.close()


def describe(item: Owned) -> str:
    fp = item.fingerprint or "-"
    addrs = ",".join(item.addrs) or "-"
    return f"{item.path} ino={item.ino} tables={'+'.join(item.tables)} fp={fp} addrs={addrs}"


def print_report(report: Report, dry_run: bool, out: TextIO) -> None:
    verb = "would remove" if dry_run else "removed"
    done = report.owned if dry_run else report.removed
    for item in done:
        print(f"{verb}: {describe(item)}", file=out)
    for item in report.vanished:
        print(f"gone before removal: {describe(item)}", file=out)
    for item, error in report.failed:
        print(f"FAILED: {describe(item)}: {error}", file=out)
    print(
        f"podseg cleanup: {len(report.owned)} of {report.scanned} namespaces hold podseg tables;"
        f" {verb} {len(done)}, failed {len(report.failed)}"
        + (" (dry run, nothing changed)" if dry_run else ""),
        file=out,
    )


def main(netns_dir: str, proc: bool, dry_run: bool, out: TextIO = sys.stdout) -> int:
    """Exit code: 0 when every owned table is gone (or listed, in a dry run), 1 otherwise."""
    try:
        report = asyncio.run(run(netns_dir, proc, dry_run))
    except protocol.DataplaneError as exc:
        print(f"podseg cleanup: dataplane worker failed: {exc}", file=sys.stderr)
        return 1
    print_report(report, dry_run, out)
    return 1 if report.failed else 0
