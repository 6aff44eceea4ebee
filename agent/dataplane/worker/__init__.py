"""The dataplane worker: the only process of podseg that ever enters a pod's network namespace.

The agent's event loop never switches namespace (design.md, doctrine 5): it sends requests to
this process as JSON lines on stdin and reads one JSON line per answer on stdout. The worker
keeps one libnftables context per namespace (the netlink socket is bound to the namespace it
was opened in), so an apply costs a few milliseconds instead of a process start. A hung worker
is killed by the agent and started afresh; nothing here is state the agent cannot rebuild.

Requests (`op`): `scan` (list candidate namespaces with their interfaces and addresses),
`apply` (run an nft script in one namespace as one transaction), `observe` (read the owned
table's fingerprint comment), `comment` (the whole owner comment, for the sweep of leftover
tables), `forget` (drop cached contexts of namespaces that are gone), `counters` (packet counts
of the named deny counters, or with `backend: iptables` of the counting deny rules, for the drop
metrics), `conntrack_list`, `conntrack_delete` and
`conntrack_mark` (a namespace's conntrack entries, for quarantine and strict mode), `patch` (an
incremental set-element transaction, refused unless the namespace's nftables generation is
still the one of the agent's last commit), `generation` (that generation alone, ~0.2 ms),
`commit` (a whole ruleset, read back only when another commit slipped in), `glance` (the
fingerprint and generation alone, for adoption at first contact),
`batch` (several of these requests in one round trip, each answered on its own: the agent
commits every pod of a pass with one request, not one per pod).
The iptables backend's requests (`ipt_apply`, `ipt_inspect`, `ipt_comment`, `ipt_delete`,
`ipt_owned`) run ipset and iptables-restore as children forked while the worker is inside the
pod's namespace (`agent.dataplane.ipt.commands`); its egress-drop table goes through the same nft
context.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from agent import child
from agent.dataplane import conntrack, linkaddrs
from agent.dataplane.ipt import commands as ipt_exec
from agent.dataplane.ipt import render as render_ipt
from agent.dataplane.nft import generation as nftgen
from agent.dataplane.nft import libnft
from agent.dataplane.nft import render as render_nft

CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


class NetnsGone(Exception):
    """The namespace at the path is not the one the caller meant (or not there at all)."""


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class Worker:
    """Holds the host namespace handle and one open handle + nft context per pod namespace."""

    def __init__(self) -> None:
        self.host_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        st = os.fstat(self.host_fd)
        self.host_id = (st.st_dev, st.st_ino)
        self.contexts: dict[tuple[int, int], libnft.Context] = {}
        self.generations: dict[tuple[int, int], nftgen.Reader] = {}

    # -- namespace entry -------------------------------------------------------------------
    def _open(self, path: str, ino: int | None) -> tuple[int, tuple[int, int]]:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise NetnsGone(f"{path}: {exc.strerror}") from exc
        st = os.fstat(fd)
        ident = (st.st_dev, st.st_ino)
        if (ino is not None and st.st_ino != ino) or ident == self.host_id:
            os.close(fd)
            raise NetnsGone(f"{path}: namespace changed or is the host namespace")
        return fd, ident

    def _run_in(
        self, path: str, ino: int | None, script: str, flags: int = libnft.OUTPUT_TERSE
    ) -> str:
        fd, ident = self._open(path, ino)
        try:
            _setns(fd)
            try:
                ctx = self._context(ident)
                if flags == libnft.OUTPUT_TERSE:
                    return ctx.run(script)
                ctx.set_output_flags(flags)
                try:
                    return ctx.run(script)
                finally:
                    ctx.set_output_flags(libnft.OUTPUT_TERSE)
            finally:
                _setns(self.host_fd)
        finally:
            os.close(fd)

    def _generation_here(self, ident: tuple[int, int]) -> int:
        """The generation of the namespace the thread is in now (`ident`)."""
        reader = self.generations.get(ident)
        if reader is None:
            reader = nftgen.Reader()
            self.generations[ident] = reader
        return reader.get()

    def generation(self, path: str, ino: int | None) -> int:
        fd, ident = self._open(path, ino)
        try:
            _setns(fd)
            try:
                return self._generation_here(ident)
            finally:
                _setns(self.host_fd)
        finally:
            os.close(fd)

    def patch(self, path: str, ino: int | None, script: str, expected: int) -> dict[str, Any]:
        """Run an incremental transaction only on tables nobody else committed to since the
        agent's last commit (generation `expected`), and report whether the commit was the
        only one (`sole`): otherwise the agent cannot vouch for the result and replaces it."""
        before, after = self._counted(path, ino, script, expected)
        if after is None:
            return {"applied": False, "generation": before, "sole": False}
        return {"applied": True, "generation": after, "sole": nftgen.follows(before, after)}

    def commit(self, path: str, ino: int | None, script: str) -> dict[str, Any]:
        """Commit a whole ruleset (a table replace). When the namespace's generation moved by
        exactly this commit, what the namespace holds is what the script says, so no read-back
        is needed (`digest` None: later checks go by generation, as after a patch); otherwise
        someone committed in between and the result is read back as `apply` does."""
        before, after = self._counted(path, ino, script)
        if after is not None and nftgen.follows(before, after):
            return {"digest": None, "generation": after, "sole": True}
        found = self.inspect(path, ino)
        return {"digest": found["digest"], "generation": found["generation"], "sole": False}

    def _counted(
        self, path: str, ino: int | None, script: str, expected: int | None = None
    ) -> tuple[int, int | None]:
        """Run `script` in the namespace between two reads of its generation: (before, after).
        With `expected`, nothing runs unless `before` is that generation (after is None)."""
        fd, ident = self._open(path, ino)
        try:
            _setns(fd)
            try:
                before = self._generation_here(ident)
                if expected is not None and before != expected:
                    return before, None
                self._context(ident).run(script)
                return before, self._generation_here(ident)
            finally:
                _setns(self.host_fd)
        finally:
            os.close(fd)

    def _context(self, ident: tuple[int, int]) -> libnft.Context:
        """The namespace's libnftables context (the thread must be inside the namespace)."""
        ctx = self.contexts.get(ident)
        if ctx is None:
            ctx = libnft.Context(libnft.OUTPUT_TERSE)
            self.contexts[ident] = ctx
        return ctx

    # -- operations ------------------------------------------------------------------------
    def scan(self, netns_dir: str, proc: bool) -> list[dict[str, Any]]:
        """Every candidate namespace once (named ones first), with interface addresses."""
        seen: set[tuple[int, int]] = {self.host_id}
        found: list[dict[str, Any]] = []
        paths: list[str] = []
        if os.path.isdir(netns_dir):
            paths += [os.path.join(netns_dir, n) for n in sorted(os.listdir(netns_dir))]
        if proc:
            paths += [f"/proc/{p}/ns/net" for p in os.listdir("/proc") if p.isdigit()]
        for path in paths:
            try:
                fd, ident = self._open(path, None)
            except NetnsGone:
                continue
            try:
                if ident in seen:
                    continue
                seen.add(ident)
                interfaces = self._interfaces(fd)
            except OSError:
                continue
            finally:
                os.close(fd)
            found.append({"path": path, "ino": ident[1], "interfaces": interfaces})
        return found

    def _interfaces(self, fd: int) -> list[dict[str, object]]:
        _setns(fd)
        try:
            return linkaddrs.interfaces()
        finally:
            _setns(self.host_fd)

    def apply(self, path: str, ino: int | None, script: str) -> dict[str, Any]:
        """Commit the script; return the digest of what the kernel now holds (see `inspect`)
        and the namespace's generation read before that listing."""
        self._run_in(path, ino, script)
        found = self.inspect(path, ino)
        return {"digest": found["digest"], "generation": found["generation"]}

    def _listing(
        self, path: str, ino: int | None, family: str, flags: int = libnft.OUTPUT_TERSE
    ) -> str | None:
        """nft's listing of our table of `family` in the namespace; None when there is none."""
        try:
            return self._run_in(path, ino, f"list table {family} podseg", flags=flags)
        except libnft.NftError:
            return None

    def glance(self, path: str, ino: int | None) -> dict[str, Any]:
        """First contact: the ruleset fingerprint alone (the one rule of chain `state`, not a
        listing of every set) and the generation, read first. ~0.3 ms against ~2 ms for
        `inspect` of a table with a few hundred elements: it is what adoption needs."""
        generation = self.generation(path, ino)
        try:
            listing = self._run_in(
                path, ino, f"list chain inet {render_nft.TABLE} {render_nft.STATE_CHAIN}"
            )
        except libnft.NftError:  # no table (or no chain: not ours, or an older format)
            listing = ""
        return {
            "fingerprint": render_nft.parse_fingerprint(listing),
            "digest": None,
            "generation": generation,
        }

    def observe(self, path: str, ino: int | None) -> str | None:
        listing = self._listing(path, ino, "inet")
        return render_nft.parse_fingerprint(listing) if listing is not None else None

    def inspect(self, path: str, ino: int | None) -> dict[str, Any]:
        """The owned tables' fingerprint and a digest of their whole kernel listing.

        The listing is stateless (no counter values), so the digest changes only when a rule,
        set element, chain or table changes: an edit that keeps our comment is still caught.
        """
        generation = self.generation(path, ino)  # read first: a later commit makes it stale
        listing = self._listing(path, ino, "inet", libnft.OUTPUT_STATELESS)
        if listing is None:
            return {"fingerprint": None, "digest": None, "generation": generation}
        netdev = self._listing(path, ino, "netdev", libnft.OUTPUT_STATELESS) or ""
        digest = hashlib.sha256(f"{listing}\n--netdev--\n{netdev}".encode()).hexdigest()
        return {
            "fingerprint": render_nft.parse_fingerprint(listing),
            "digest": digest[:32],
            "generation": generation,
        }

    def comment(self, path: str, ino: int | None) -> str | None:
        listing = self._listing(path, ino, "inet")
        return render_nft.parse_comment(listing) if listing is not None else None

    def counters(
        self, targets: list[dict[str, Any]], backend_name: str = "nftables"
    ) -> dict[str, dict[str, int]]:
        """Packet counts of podseg's named counters, per target key (drop totals, agent.flows).

        Targets whose namespace or table is gone are left out: the caller treats a missing or
        smaller value as a reset. With the iptables backend the counts are the per-rule
        packet counters of the counting deny rules (`ipt_exec.counters`).
        """
        if backend_name == "iptables":
            return self._ipt_counters(targets)
        out: dict[str, dict[str, int]] = {}
        for target in targets:
            try:
                text = self._run_in(
                    str(target["path"]),
                    target.get("ino"),
                    f"list counters table inet {render_nft.TABLE}",
                    flags=libnft.OUTPUT_JSON,
                )
            except (NetnsGone, libnft.NftError, OSError):
                continue
            values: dict[str, int] = {}
            for item in json.loads(text or "{}").get("nftables", []):
                counter = item.get("counter") if isinstance(item, dict) else None
                if isinstance(counter, dict) and isinstance(counter.get("name"), str):
                    values[counter["name"]] = int(counter.get("packets", 0))
            out[str(target["key"])] = values
        return out

    def _ipt_counters(self, targets: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for target in targets:
            try:
                values = self._inside(str(target["path"]), target.get("ino"), ipt_exec.counters)
            except (NetnsGone, ipt_exec.IptError, OSError):
                continue
            if values:  # no deny rule (not enforced here): absent, as a missing nft table
                out[str(target["key"])] = values
        return out

    def _inside(self, path: str, ino: int | None, fn: Callable[[], T]) -> T:
        """Run `fn` with this process inside the namespace (children inherit it)."""
        fd, _ = self._open(path, ino)
        try:
            _setns(fd)
            try:
                return fn()
            finally:
                _setns(self.host_fd)
        finally:
            os.close(fd)

    def conntrack_list(self, path: str, ino: int | None) -> list[dict[str, Any]]:
        """Every conntrack entry of the namespace (tuple, mark and the key to delete it by)."""
        return self._inside(path, ino, _conntrack_dump)

    def conntrack_delete(self, path: str, ino: int | None, entries: list[dict[str, Any]]) -> int:
        """Delete the given entries (from `conntrack_list`); returns how many were still there."""

        def delete() -> int:
            with conntrack.Conntrack() as ct:
                return sum(1 for entry in entries if ct.delete(entry))

        return self._inside(path, ino, delete)

    def conntrack_mark(
        self, path: str, ino: int | None, entries: list[dict[str, Any]], mark: int
    ) -> int:
        """OR `mark` into the given entries' marks; returns how many were still there."""

        def set_mark() -> int:
            with conntrack.Conntrack() as ct:
                return sum(1 for entry in entries if ct.set_mark(entry, mark))

        return self._inside(path, ino, set_mark)

    # -- iptables backend -----------------------------------------------------------------
    @staticmethod
    def _ipt_comment() -> str | None:
        for family in (4, 6):
            comment = render_ipt.parse_comment(ipt_exec.save(family))
            if comment:
                return comment
        return None

    def ipt_apply(self, path: str, ino: int | None, rendered: dict[str, str]) -> str | None:
        """Egress-drop table first (when wanted), then sets and rules, then cleanup."""
        netdev = str(rendered.get("netdev") or "")
        if netdev:
            self._run_in(path, ino, netdev)
        digest = self._inside(path, ino, lambda: ipt_exec.apply(rendered))
        if not netdev:
            self._run_in(path, ino, render_ipt.netdev_delete_script())
        return self._with_netdev(path, ino, digest)

    def ipt_inspect(self, path: str, ino: int | None) -> dict[str, str | None]:
        """Fingerprint and digest of the owned iptables rules, their sets and the netdev
        egress-drop table (the whole owned state, as `inspect` for nftables)."""
        fingerprint, digest = self._inside(path, ino, ipt_exec.inspect)
        if digest is None:
            return {"fingerprint": None, "digest": None}
        return {"fingerprint": fingerprint, "digest": self._with_netdev(path, ino, digest)}

    def _with_netdev(self, path: str, ino: int | None, digest: str) -> str:
        netdev = self._listing(path, ino, "netdev", libnft.OUTPUT_STATELESS) or ""
        return hashlib.sha256(f"{digest}\n--netdev--\n{netdev}".encode()).hexdigest()[:32]

    def ipt_delete(self, path: str, ino: int | None) -> bool:
        removed = self._inside(path, ino, ipt_exec.delete)
        self._run_in(path, ino, render_ipt.netdev_delete_script())
        return removed

    def forget(self, inos: list[int] | None) -> int:
        """Close the contexts of the given namespaces (None: all), releasing the namespaces."""
        dropped = 0
        for ident, ctx in list(self.contexts.items()):
            if inos is None or ident[1] in inos:
                ctx.close()
                del self.contexts[ident]
                dropped += 1
        for ident, reader in list(self.generations.items()):
            if inos is None or ident[1] in inos:
                reader.close()
                del self.generations[ident]
        return dropped

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        path = str(request.get("path", ""))
        ino = request.get("ino")
        if op == "scan":
            return {"netns": self.scan(str(request["netns_dir"]), bool(request.get("proc")))}
        if op == "apply":
            return self.apply(path, ino, str(request["script"]))
        if op == "commit":
            return self.commit(path, ino, str(request["script"]))
        if op == "patch":
            return self.patch(path, ino, str(request["script"]), int(request["generation"]))
        if op == "generation":
            return {"generation": self.generation(path, ino)}
        if op == "inspect":
            return self.inspect(path, ino)
        if op == "glance":
            return self.glance(path, ino)
        if op == "observe":
            return {"fingerprint": self.observe(path, ino)}
        if op == "comment":  # the owner comment, for the sweep of leftover tables
            return {"comment": self.comment(path, ino)}
        if op == "forget":
            return {"forgotten": self.forget(request.get("inos"))}
        if op == "counters":  # drop totals for agent.flows
            return {
                "counters": self.counters(
                    list(request.get("targets") or []), str(request.get("backend") or "nftables")
                )
            }
        if op == "conntrack_list":
            return {"entries": self.conntrack_list(path, ino)}
        if op == "conntrack_delete":
            return {"deleted": self.conntrack_delete(path, ino, list(request["entries"]))}
        if op == "conntrack_mark":
            entries = list(request["entries"])
            return {"marked": self.conntrack_mark(path, ino, entries, int(request["mark"]))}
        if op == "ipt_apply":
            return {"digest": self.ipt_apply(path, ino, request["rendered"])}
        if op == "ipt_inspect":
            return self.ipt_inspect(path, ino)
        if op == "ipt_comment":
            return {"comment": self._inside(path, ino, lambda: self._ipt_comment())}
        if op == "ipt_delete":
            return {"removed": self.ipt_delete(path, ino)}
        if op == "ipt_owned":
            return {"owned": self._inside(path, ino, ipt_exec.owned)}
        if op == "batch":  # each part succeeds or fails on its own, in order
            return {"replies": [answer(self, dict(part)) for part in request.get("requests", [])]}
        if op == "ping":
            return {"pid": os.getpid(), "contexts": len(self.contexts)}
        raise ValueError(f"unknown op {op!r}")


def _conntrack_dump() -> list[dict[str, Any]]:
    if conntrack.tracked_here() == 0:
        return []  # nothing to list: spare the walk of the global table
    with conntrack.Conntrack() as ct:
        return ct.dump()


def answer(worker: Worker, request: dict[str, Any]) -> dict[str, Any]:
    """The reply to one request: its result with `ok`, or a typed error (never raises)."""
    reply: dict[str, Any] = {"id": request.get("id")}
    started = time.perf_counter()
    try:
        reply.update(worker.handle(request))
        reply["ok"] = True
    except NetnsGone as exc:
        reply.update(ok=False, kind="netns_gone", error=str(exc))
    except libnft.NftError as exc:
        reply.update(ok=False, kind="nft", error=str(exc))
    except ipt_exec.IptError as exc:
        reply.update(ok=False, kind="ipt", error=str(exc))
    except Exception as exc:  # reported to the agent as a typed error, never a crash
        reply.update(ok=False, kind="internal", error=f"{type(exc).__name__}: {exc}")
    reply["seconds"] = time.perf_counter() - started  # this request's own time in the worker
    return reply


def main() -> None:
    child.die_with_parent(child.WORKER_PARENT_ENV)
    worker = Worker()
    for line in sys.stdin:
        if not line.strip():
            continue
        sys.stdout.write(json.dumps(answer(worker, json.loads(line))) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
