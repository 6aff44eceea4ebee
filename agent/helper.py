"""The helper process: the drop reader (`agent.flows.reader`) and the change watcher
(`agent.dataplane.watcher`) as two parts of one select loop (`agent.dataplane.listener`).

Why one process: each of them is a loop over netlink sockets that it opens inside pod
namespaces, and a Python interpreter of its own cost about 7 MiB on every node for a few
hundred lines of work. Sharing one keeps each part's protocol (requests and output lines carry
the part's name) and its own sockets, and costs one interpreter.

The drop reader binds the NFLOG group the deny rules log to; the agent, which renders them,
names it in the helper's environment (`NFLOG_GROUP_ENV`), so that the number is stated once
(`agent.dataplane.nft.render.NFLOG_GROUP`) and the helper never imports the renderers.

A part that raises must not leave the other running alone, unseen: the helper then says which
part failed (`{"part": name, "failed": error}`), the traceback goes to stderr, and it exits
with status 1; the agent restarts the whole helper (`agent.helperlink`), and both parts reopen
their sockets. It dies with the agent (`agent.child`).
"""

from __future__ import annotations

import os
import selectors
import sys
import traceback

from agent import child
from agent.dataplane import enter, listener, watcher
from agent.flows import reader

DROPS = "drops"  # the drop reader's part
CHANGES = "changes"  # the change watcher's part
NFLOG_GROUP_ENV = "PODSEG_NFLOG_GROUP"  # the NFLOG group the drop reader binds


def parts(selector: selectors.BaseSelector, group: int) -> dict[str, listener.Listener]:
    """Both parts, on one selector and one namespace-entering host."""
    host = enter.Host()
    return {
        DROPS: reader.Reader(DROPS, selector, host, group),
        CHANGES: watcher.Watcher(CHANGES, selector, host),
    }


def run() -> int:
    """Serve until stdin closes (0), or until a part fails (1); 2 when the agent named no
    NFLOG group."""
    try:
        group = int(os.environ[NFLOG_GROUP_ENV])
    except (KeyError, ValueError):
        print(f"{NFLOG_GROUP_ENV} must name the NFLOG group to bind", file=sys.stderr)
        return 2
    selector = selectors.DefaultSelector()
    try:
        listener.serve(parts(selector, group), selector)
    except listener.PartFailed as exc:
        traceback.print_exc(file=sys.stderr)
        listener.emit({"part": exc.part, "failed": str(exc)})
        return 1
    return 0


def main() -> None:
    child.die_with_parent(child.HELPER_PARENT_ENV)
    code = run()
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
