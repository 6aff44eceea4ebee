"""The incremental update of a pod's iptables ruleset: ipset element deletes/adds on the live
sets instead of a whole apply (new sets, two iptables-restore commits, stale sets destroyed).

Why: a whole apply rebuilds every set and costs a dozen process starts, growing with the
peer sets, while a remote pod's label flip is one element in a few sets. When the new
ruleset differs from the programmed one only in set elements (same rules apart from the owner
comment, same sets by name and type, same netdev table), the change is ONE `ipset restore`
batch run by the dataplane worker in the pod's namespace:

    del  PODSEG-<gen>-fp <old fingerprint>     (strict: fails, changing nothing, when the
                                                namespace does not hold what we last committed)
    del -exist / add -exist <set> <element>     (the deltas, deletes first)
    add  PODSEG-<gen>-fp <new fingerprint>      (last: a batch that stops half way leaves the
                                                fingerprint set empty, so the ruleset reads
                                                as unknown and is applied whole)
    list -t                                     (the sets' headers after the patch: entry
                                                counts to check, the digest to record)

The fingerprint set is `render_ipt.STATE_SET`; the worker substitutes the set generation
token for `render_ipt.GEN`. Otherwise the caller applies the whole ruleset as before.

Pure: it works on two rendered programmes and returns text; only the dataplane worker runs it.
Elements are compared as rendered text (CIDR strings, one-to-one with the canonical ranges).
"""

from __future__ import annotations

import re

from agent.dataplane import protocol
from agent.dataplane.ipt import render as render_ipt

_SIZES = re.compile(r" hashsize \d+ maxelem \d+")
_OWNER = f'-A {render_ipt.INPUT} -m comment --comment "podseg fp='
_STATE_ADD = f"add {render_ipt.STATE_SET} "


def shape(program: protocol.IptProgram) -> tuple[str, ...] | None:
    """What a patch must leave unchanged: the rules (owner comment aside), the netdev table
    and the sets' declarations (sizes aside: a set grows within its maxelem). None when the
    programme has no fingerprint set (no sets, or an older format): only a whole apply."""
    if f"create {render_ipt.STATE_SET} " not in program.ipset:
        return None
    rules = [
        line
        for body in (program.v4, "--v6--\n", program.v6)
        for line in body.splitlines()
        if not line.startswith(_OWNER)
    ]
    creates = [_SIZES.sub("", line) for line in _creates(program.ipset)]
    return (*rules, "--netdev--", program.netdev, "--sets--", *creates)


def patch(
    old: protocol.IptProgram, old_fp: str, new: protocol.IptProgram, new_fp: str
) -> str | None:
    """The `ipset restore` batch (without its final `list -t`) turning sets holding `old`
    into sets holding `new`; None when only a whole apply can do it, "" when they are the same
    ruleset."""
    before = shape(old)
    if before is None or before != shape(new):
        return None
    if old_fp == new_fp:
        return ""
    # Set differences of whole lines (in C: a peer set has thousands), then the few that
    # differ are filtered and sorted (a deterministic batch).
    old_lines, new_lines = set(old.ipset.splitlines()), set(new.ipset.splitlines())
    out = [f"del {render_ipt.STATE_SET} {render_ipt.state_element(old_fp)}\n"]
    out += [f"del -exist {line[4:]}\n" for line in _elements(old_lines - new_lines)]
    out += [f"add -exist {line[4:]}\n" for line in _elements(new_lines - old_lines)]
    out.append(f"{_STATE_ADD}{render_ipt.state_element(new_fp)}\n")
    return "".join(out)


def counts(program: protocol.IptProgram) -> dict[str, int]:
    """How many elements each set of `program` holds (names with the `GEN` placeholder)."""
    text = "\n" + program.ipset
    names = [line.split(" ", 2)[1] for line in _creates(program.ipset)]
    return {name: text.count(f"\nadd {name} ") for name in names}


def changed(script: str) -> tuple[int, int]:
    """(elements deleted, elements added) by a patch script, the fingerprint swap aside."""
    lines = script.splitlines()
    return (
        sum(1 for line in lines if line.startswith("del -exist ")),
        sum(1 for line in lines if line.startswith("add -exist ")),
    )


def _creates(ipset: str) -> list[str]:
    """The `create` lines of a restore script (str.find: a script has thousands of lines and
    a dozen creates)."""
    out = []
    text = "\n" + ipset
    start = text.find("\ncreate ")
    while start >= 0:
        end = text.find("\n", start + 1)
        out.append(text[start + 1 : end if end >= 0 else len(text)])
        start = text.find("\ncreate ", start + 1)
    return out


def _elements(lines: set[str]) -> list[str]:
    """The `add` lines among restore script lines, the fingerprint set's aside, sorted."""
    return sorted(
        line for line in lines if line.startswith("add ") and not line.startswith(_STATE_ADD)
    )
