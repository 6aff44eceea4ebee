"""`podseg cni install|uninstall`: chain podseg-cni into the node's CNI configuration, and take
it out again leaving the configuration exactly as it was (docs/cni.md).

Why: the plugin only runs if the runtime's network configuration list names it after the main
plugin. Install copies the binary into the CNI bin directory, keeps the original conflist beside
it (`<file>.podseg-orig`, an extension no runtime loads) and rewrites the conflist with the
podseg-cni entry appended; every write is a temp file renamed over the target, so the runtime
never reads half a file. Install is idempotent (a second run changes nothing). Uninstall puts
the original back byte for byte, unless someone rewrote the conflist since (a CNI's own
installer): then only the podseg-cni entry is taken out of what is there now.

`chained` and `unchained` are pure (bytes in, bytes out); the rest is file handling.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from typing import Any, TextIO

PLUGIN = "podseg-cni"
BACKUP_SUFFIX = ".podseg-orig"
DEFAULT_BINARY = "/usr/local/lib/podseg/podseg-cni"  # where the image keeps it (Dockerfile)


class InstallError(Exception):
    """The configuration cannot be chained (none found, unreadable, not a conflist)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("install", "uninstall"))
    parser.add_argument("--conf-dir", default="/etc/cni/net.d", help="CNI configuration dir")
    parser.add_argument("--bin-dir", default="/opt/cni/bin", help="CNI plugin binary dir")
    parser.add_argument(
        "--conflist",
        default=None,
        help="the conflist to chain into (file name in --conf-dir; default: the first "
        "*.conflist by name, as the runtime picks it)",
    )
    parser.add_argument(
        "--plugin-binary",
        default=os.environ.get("PODSEG_CNI_BINARY", DEFAULT_BINARY),
        help=f"the podseg-cni binary to copy (PODSEG_CNI_BINARY; default {DEFAULT_BINARY})",
    )
    parser.add_argument("--agent-socket", default="/run/podseg/cni.sock")
    parser.add_argument(
        "--cluster-dns",
        default=os.environ.get("PODSEG_CLUSTER_DNS", ""),
        help="cluster DNS Service addresses a pending pod may query, comma-separated "
        "(PODSEG_CLUSTER_DNS)",
    )
    parser.add_argument(
        "--node-address",
        default="",
        help="node addresses a pending pod accepts packets from (kubelet probes), "
        "comma-separated; the pod's gateway is always accepted",
    )
    parser.add_argument("--timeout-ms", type=int, default=5000)
    parser.add_argument(
        "--fail-open",
        action="store_true",
        help="remove the pending table when "
        "the agent does not answer in time (default: keep it, fail closed)",
    )


def entry(args: argparse.Namespace) -> dict[str, Any]:
    """The podseg-cni entry of the conflist, from the flags."""

    def addrs(text: str) -> list[str]:
        return [a.strip() for a in text.split(",") if a.strip()]

    conf: dict[str, Any] = {
        "type": PLUGIN,
        "agentSocket": args.agent_socket,
        "timeoutMs": args.timeout_ms,
        "failOpen": bool(args.fail_open),
        "clusterDNS": addrs(args.cluster_dns),
    }
    if args.node_address:
        conf["nodeAddresses"] = addrs(args.node_address)
    return conf


def _load(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise InstallError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("plugins"), list):
        raise InstallError("not a network configuration list (no plugins)")
    return doc


def _dump(doc: Mapping[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2) + "\n").encode()


def chained(original: bytes, plugin: Mapping[str, Any]) -> bytes:
    """`original` with `plugin` as its last plugin (an earlier podseg-cni entry replaced)."""
    doc = _load(original)
    doc["plugins"] = [p for p in doc["plugins"] if not _ours(p)] + [dict(plugin)]
    return _dump(doc)


def unchained(current: bytes) -> bytes:
    """`current` without its podseg-cni entry."""
    doc = _load(current)
    doc["plugins"] = [p for p in doc["plugins"] if not _ours(p)]
    return _dump(doc)


def _same_but_ours(current: bytes, original: bytes) -> bool:
    """Whether `current` is `original` plus our entry (nobody rewrote it since install)."""
    try:
        now, before = _load(current), _load(original)
    except InstallError:
        return False
    now["plugins"] = [p for p in now["plugins"] if not _ours(p)]
    return bool(now == before)


def _mode(path: str) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o644


def _ours(plugin: Any) -> bool:
    return isinstance(plugin, Mapping) and plugin.get("type") == PLUGIN


def find_conflist(conf_dir: str, name: str | None) -> str:
    if name:
        path = os.path.join(conf_dir, name)
        if not os.path.isfile(path):
            raise InstallError(f"{path} not found")
        return path
    try:
        names = sorted(n for n in os.listdir(conf_dir) if n.endswith(".conflist"))
    except OSError as exc:
        raise InstallError(f"cannot list {conf_dir}: {exc}") from exc
    if not names:
        raise InstallError(f"no *.conflist in {conf_dir} (is the node's CNI installed yet?)")
    return os.path.join(conf_dir, names[0])


def _has_conflist(conf_dir: str) -> bool:
    try:
        return any(n.endswith(".conflist") for n in os.listdir(conf_dir))
    except OSError:
        return False


def write_atomically(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to a temp file beside `path`, then rename it over `path`."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".podseg-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        with_suppressed_unlink(tmp)
        raise


def with_suppressed_unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _copy_binary(source: str, bin_dir: str) -> str:
    os.makedirs(bin_dir, exist_ok=True)
    target = os.path.join(bin_dir, PLUGIN)
    with open(source, "rb") as src:
        data = src.read()
    try:
        with open(target, "rb") as held:
            if held.read() == data:
                return "unchanged"
    except FileNotFoundError:
        pass
    write_atomically(target, data, 0o755)
    return "copied"


def install(args: argparse.Namespace, out: TextIO) -> None:
    if not args.conflist and not _has_conflist(args.conf_dir):
        # A node without a conflist (its CNI is not installed yet, or keeps it elsewhere):
        # nothing to chain, and no reason to hold the agent back; pods are then enforced as
        # soon as the API shows their address, as without the plugin.
        print(
            f"podseg cni install: no *.conflist in {args.conf_dir}; podseg-cni not chained",
            file=out,
        )
        return
    path = find_conflist(args.conf_dir, args.conflist)
    backup = path + BACKUP_SUFFIX
    with open(path, "rb") as held:
        current = held.read()
    if not os.path.exists(backup):
        _load(current)  # refuse before anything is written
        shutil.copyfile(path, backup + ".tmp")
        os.rename(backup + ".tmp", backup)
    binary = _copy_binary(args.plugin_binary, args.bin_dir)
    wanted = chained(current, entry(args))
    if wanted != current:
        write_atomically(path, wanted, _mode(path))
    state = "unchanged" if wanted == current else "chained"
    print(f"podseg cni install: {path} {state}, binary {binary}", file=out)


def uninstall(args: argparse.Namespace, out: TextIO) -> None:
    try:
        path = find_conflist(args.conf_dir, args.conflist)
    except InstallError:
        print("podseg cni uninstall: no conflist, nothing to do", file=out)
        path = ""
    backup = path + BACKUP_SUFFIX
    if path and os.path.exists(backup):
        with open(path, "rb") as held:
            current = held.read()
        with open(backup, "rb") as kept:
            original = kept.read()
        if _same_but_ours(current, original):
            os.rename(backup, path)  # exactly what was there before install
            state = "restored"
        else:  # rewritten since install: take out only our entry
            if PLUGIN.encode() in current:
                write_atomically(path, unchained(current), _mode(path))
            os.unlink(backup)
            state = "unchained"
        print(f"podseg cni uninstall: {path} {state}", file=out)
    elif path:
        with open(path, "rb") as held:
            current = held.read()
        if PLUGIN.encode() in current:
            write_atomically(path, unchained(current), _mode(path))
        print(f"podseg cni uninstall: {path} has no podseg-cni entry", file=out)
    with_suppressed_unlink(os.path.join(args.bin_dir, PLUGIN))


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        if args.action == "install":
            install(args, out)
        else:
            uninstall(args, out)
    except (InstallError, OSError) as exc:
        print(f"podseg cni {args.action}: {exc}", file=sys.stderr)
        return 2
    return 0
