"""The pending table podseg-cni installs in a new pod's namespace (deploy/cni, docs/cni.md).

Why here: the agent recognises that table as podseg's own. Its first commit of the pod's real
ruleset deletes it in the same nftables transaction (no moment with neither, no moment with
both: while both are there a packet must pass both, so the pod's allows would not work yet),
and `podseg cleanup` removes it with the rest. Pure: text in, text out.
"""

from __future__ import annotations

import re

TABLE = "podseg-pending"  # `table inet podseg-pending`, as the plugin writes it

_OWNER_RE = re.compile(r'comment "podseg pending pod=(\S+)')


def delete_script() -> str:
    """Remove the pending table; succeeds when it is absent (create-then-delete)."""
    return f"table inet {TABLE}\ndelete table inet {TABLE}\n"


def owner(listing: str) -> str | None:
    """The `<ns>/<name>` of the pod the plugin installed the table for, from its listing."""
    match = _OWNER_RE.search(listing)
    return match.group(1) if match else None
