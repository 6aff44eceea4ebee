"""A pod's first commit in two steps: its tables with the peer sets declared empty, then the
peer elements as netlink messages. Pure: text and bytes in, text and bytes out.

Why: a whole commit of a pod with thousands of peers spends most of its time in libnftables
parsing and evaluating the elements' text (about 10 of 14 ms for ~3,000 elements), while the
same elements sent as netlink set-element messages cost the kernel ~3 ms. So when a namespace
holds no podseg table yet, the dataplane worker (`agent.dataplane.worker.nft.commit`) splits
the commit script:

1. the script's tables, each peer set (`render_nft.is_peer_set`: their elements only allow)
   declared without its elements, and chain `state` without its rule, committed through
   libnftables (no delete prelude: there is nothing to delete, and a transaction that deletes
   nothing leaves the kernel no clean-up that the next socket close would wait for);
2. ONE nfnetlink transaction (`agent.dataplane.nft.setelem.fill_batch`): the elements, the
   rule of chain `state` (the fingerprint) and, when the script removes it, podseg-cni's
   pending table.

Between the two the pod is never less strict than before or after: empty peer sets allow
nothing, every other set and rule (tiers, node guard, quarantine, anti-spoofing) is there from
step 1, and a pending table stays until step 2 removes it in the transaction that fills the
sets. A chain `state` without its rule carries no fingerprint, so an agent that stops between
the two never takes the table for current: it replaces it (atomically). Step 2 is one
transaction: it fills every set or none. A namespace that already holds a table gets the old
whole-script replace, atomic, since emptying live peer sets would drop allowed traffic.

The result lists as a whole commit's does (same objects, created in the same order: the rule
of chain `state` gets the same handle). A script not in `render_nft`'s exact layout, or with
fewer than `LEAST` peer elements, is not split (None): the whole commit does it as before.
"""

from __future__ import annotations

import dataclasses
import re

from agent.dataplane.nft import pending
from agent.dataplane.nft import render as render_nft

LEAST = 256  # fewer peer elements than this: libnftables does them in well under a millisecond
TABLE = render_nft.TABLE

_PRELUDE = render_nft.delete_script()
_PENDING = pending.delete_script()
_INET_OPEN = f"table inet {TABLE} {{\n"
_NETDEV_OPEN = f"table netdev {TABLE} {{\n"
_ELEMENTS_OPEN = "    elements = {\n      "
_ELEMENTS_CLOSE = "\n    }\n  }\n"
_STATE = re.compile(
    rf"  chain {render_nft.STATE_CHAIN} \{{\n"
    r'    return comment "(podseg state=[0-9a-f]{16})"\n'
)
# A set declaration as `render_nft` writes it (`_set_text`), up to its elements.
_SET = re.compile(r"  set (\S+) \{\n    type ([^\n]+)\n(?:    flags ([^\n]+)\n)?(?=    elements)")
_ADDR = {"ipv4_addr": 4, "ipv6_addr": 6}
_EXACT = {f"{t} . inet_proto . inet_service": f for t, f in _ADDR.items()}


@dataclasses.dataclass(frozen=True, slots=True)
class Fill:
    """The elements of one peer set, as the script spells them (`texts`: joined by
    `SEPARATOR`): an address interval set (`exact` False) or an `addr . proto . port` hash
    set (`exact` True) of `family`."""

    name: str
    family: int
    exact: bool
    texts: str


SEPARATOR = ",\n      "


@dataclasses.dataclass(frozen=True, slots=True)
class Split:
    """Step 1's script, step 2's content: the sets to fill, the comment of the rule of chain
    `state`, whether podseg-cni's pending table goes too, and how many elements there are."""

    script: str
    fills: tuple[Fill, ...]
    state: str
    pending: bool
    elements: int


def split(script: str, least: int | None = None) -> Split | None:
    """The two steps of a whole commit `script` (`backends.Nftables.commit_request`'s: the
    optional pending prelude, the delete prelude, the tables); None when it is not in that
    layout or fills fewer than `least` (default `LEAST`) elements."""
    dropping = script.startswith(_PENDING)
    rest = script[len(_PENDING) :] if dropping else script
    if not rest.startswith(_PRELUDE):
        return None
    rest = rest[len(_PRELUDE) :]
    if not rest.startswith(_INET_OPEN):
        return None
    end = rest.find("\n}\n") + 3  # the inet table's closing line: every inner line is indented
    if end < 3:
        return None
    inet, after = rest[:end], rest[end:]
    if after and not (after.startswith(_NETDEV_OPEN) and after.find("\n}\n") == len(after) - 3):
        return None  # one netdev table, nothing else
    state = _STATE.search(inet)
    if state is None or _STATE.search(inet, state.end()) is not None:
        return None
    pieces: list[str] = []
    fills: list[Fill] = []
    count, done = 0, 0
    for found in _SET.finditer(inet):
        name, kind, flags = found.group(1), found.group(2), found.group(3)
        if not render_nft.is_peer_set(name):
            continue
        if flags == "interval" and kind in _ADDR:
            family, exact = _ADDR[kind], False
        elif flags is None and kind in _EXACT:
            family, exact = _EXACT[kind], True
        else:
            return None  # a peer set of another layout: never guess
        start = found.end()
        if not inet.startswith(_ELEMENTS_OPEN, start):
            return None
        close = inet.find(_ELEMENTS_CLOSE, start)
        if close < 0:
            return None
        texts = inet[start + len(_ELEMENTS_OPEN) : close]
        fills.append(Fill(name, family, exact, texts))
        count += texts.count(SEPARATOR) + 1
        pieces += [inet[done:start], "  }\n"]
        done = close + len(_ELEMENTS_CLOSE)
    pieces.append(inet[done:])
    if count < (LEAST if least is None else least):
        return None
    emptied = "".join(pieces)
    state = _STATE.search(emptied)
    assert state is not None  # it was outside every set
    first = emptied[: state.start()] + f"  chain {render_nft.STATE_CHAIN} {{\n"
    first += emptied[state.end() :]
    return Split(first + after, tuple(fills), state.group(1), dropping, count)
