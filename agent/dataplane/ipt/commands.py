"""The iptables backend's kernel side: runs ipset / iptables-restore inside the current netns.

Only the dataplane worker calls this, after it has entered the pod's network namespace (a
child process inherits the namespace of the thread that forks it). We drive the distribution's
own `iptables-restore` / `ip6tables-restore` (on Debian the nf_tables flavour) and `ipset`
rather than python-iptables, which writes through libiptc to the legacy tables only: on a node
whose iptables is iptables-nft those rules would be invisible to `iptables-save` and ordered
unpredictably against the nf_tables ones (README, "Backends").

What is atomic (README, "Backends"): each family's rules switch in ONE `iptables-restore
--noflush` commit (chains flushed and refilled, jumps re-inserted, new sets referenced), so a
packet of one family sees either the whole old or the whole new ruleset. The sets of the new
ruleset are complete before that commit (new generation names, filled by one `ipset restore`),
and the old generation is destroyed only after both commits. IPv4 and IPv6 commit one after
the other; a packet belongs to one family, so no packet can see a mix.
"""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import time
from collections.abc import Sequence

from agent.dataplane.ipt import render as render_ipt

TIMEOUT = 5.0
DESTROY_RETRY_SECONDS = 1.0
TOOLS = {4: ("iptables-save", "iptables-restore"), 6: ("ip6tables-save", "ip6tables-restore")}


class IptError(Exception):
    """An iptables or ipset command failed; the previous ruleset stays in place."""


class MissingTool(IptError):
    """iptables or ipset is not installed (so nothing of this backend can be in place)."""


def _run(args: Sequence[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(
            list(args), input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except FileNotFoundError as exc:
        raise MissingTool(f"{args[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise IptError(f"{args[0]} did not finish in {TIMEOUT}s") from exc
    if done.returncode != 0:
        raise IptError(f"{' '.join(args[:2])}: {done.stderr.strip()[-1000:]}")
    return done.stdout


def save(family: int) -> str:
    """`iptables-save -t filter` (or ip6tables) of the current namespace."""
    return _run([TOOLS[family][0], "-t", "filter"])


def _restore(family: int, script: str) -> None:
    _run([TOOLS[family][1], "--noflush", "-w", "5"], stdin=script)


def set_listing() -> list[str]:
    """Names of the PODSEG- ipsets in the current namespace."""
    out = _run(["ipset", "list", "-n"])
    return [n for n in out.split() if n.startswith(render_ipt.PREFIX)]


def _destroy(names: Sequence[str]) -> list[str]:
    """Destroy sets; one still referenced by a rule being released is retried for a bounded
    time (nf_tables may free replaced rules just after the commit). Returns those left."""
    left = list(names)
    deadline = time.monotonic() + DESTROY_RETRY_SECONDS
    while left:
        for name in list(left):
            done = subprocess.run(
                ["ipset", "destroy", name], capture_output=True, timeout=TIMEOUT, check=False
            )
            if done.returncode == 0:
                left.remove(name)
        if left:
            left = [n for n in left if n in set_listing()]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return left


def apply(rendered: dict[str, str]) -> tuple[str, str]:
    """Apply a rendered ruleset (the fields of `render_ipt.Rendered`) in the current netns;
    the digest of the result (as `inspect`) and the generation token of its sets.

    The caller has already replaced the netdev egress-drop table when the new ruleset has one
    (before the rules that mark), and removes it afterwards when it has none."""
    generation = secrets.token_hex(3)
    sets = rendered["ipset"].replace(render_ipt.GEN, generation)
    created = render_ipt.set_names(sets)
    try:
        if sets:
            _run(["ipset", "restore"], stdin=sets)
        for family, body in ((4, rendered["v4"]), (6, rendered["v6"])):
            _restore(family, render_ipt.compose(body, save(family), generation))
    except IptError:
        _destroy([n for n in created if n in set_listing()])  # unreferenced unless v4 landed
        raise
    v4, v6 = save(4), save(6)
    referenced = set(render_ipt.referenced_sets(v4 + v6))
    stale = [n for n in set_listing() if n not in referenced]
    if stale:
        try:
            _run(["ipset", "restore"], stdin="".join(f"destroy {n}\n" for n in stale))
        except IptError:
            _destroy([n for n in stale if n in set_listing()])  # still being released: retry
    return _digest(v4, v6), generation


def patch(script: str, token: str, digest: str, counts: dict[str, int]) -> tuple[bool, str]:
    """Run an incremental batch (`agent.dataplane.ipt.incremental`) on the sets of generation
    `token` in the current netns: (vouched, digest after it).

    IptError when ipset refused a line (the fingerprint set did not hold the fingerprint
    swapped out, a set is missing or full): what ran before that line stays, the fingerprint
    set is then empty or unchanged, so the namespace reads as not current. Not vouched when a
    set does not hold the count of elements the new ruleset has (someone else edited it).
    The digest keeps the rules part of `digest` (a patch changes no rule; a rule edited
    meanwhile shows at the next read-back) and reads the sets part from the batch's own
    listing."""
    out = _run(["ipset", "restore"], stdin=script.replace(render_ipt.GEN, token) + "list -t\n")
    headers = render_ipt.set_headers(out)
    expected = {name.replace(render_ipt.GEN, token): n for name, n in counts.items()}
    vouched = all(
        f"Number of entries: {n}\n" in headers.get(name, "") for name, n in expected.items()
    )
    return vouched, digest[:16] + _sets_digest(sorted(expected), headers)


def delete() -> bool:
    """Remove every PODSEG- jump, chain and set; True when there was something to remove."""
    found = False
    for family in (4, 6):
        script = render_ipt.delete_script(save(family))
        if script is not None:
            _restore(family, script)
            found = True
    names = set_listing()
    left = _destroy(names)
    if left:
        raise IptError(f"ipsets still in use after delete: {', '.join(left)}")
    return found or bool(names)


def owned() -> list[str]:
    """What podseg's iptables backend holds here: `iptables`, `ip6tables`, `ipset` (any).
    Without the tools installed nothing of it can be here: an empty list."""
    out = []
    for family, name in ((4, "iptables"), (6, "ip6tables")):
        try:
            if render_ipt.delete_script(save(family)) is not None:
                out.append(name)
        except MissingTool:
            pass
    try:
        if set_listing():
            out.append("ipset")
    except MissingTool:
        pass
    return out


def inspect() -> tuple[str | None, str | None]:
    """(fingerprint, digest) of the owned rules and the sets they reference.

    The fingerprint counts only when both families carry the same one (a half-applied pair
    reads as unknown, so it is re-applied). The digest covers every owned rule, the built-in
    chains' rules (order included) and the referenced sets' elements, never counters.
    """
    v4, v6 = save(4), save(6)
    fp4, fp6 = render_ipt.parse_fingerprint(v4), render_ipt.parse_fingerprint(v6)
    if fp4 is None and fp6 is None:
        return None, None
    fingerprint = fp4 if fp4 == fp6 else None
    state = [n for n in render_ipt.referenced_sets(v6) if n.endswith("-fp")]
    if fingerprint is not None and state:
        # Patched since the last whole apply: the fingerprint set holds the current one
        # (empty after a patch that stopped half way: unknown).
        fingerprint = render_ipt.parse_state(_run(["ipset", "save", state[0]]))
    return fingerprint, _digest(v4, v6)


def _digest(v4: str, v6: str) -> str:
    """Rules in full (the first 16 hex digits); for each referenced set its terse header
    (type, options, entry count, memory size: the last 16). Reading every element back
    (`ipset save`) costs ~15 us per element, too much for a periodic check of every pod; a
    set whose element was swapped for another with the count and size unchanged is therefore
    not noticed (README, "Backends"). Two parts, so that a patch, which changes sets alone,
    can carry the rules part over (`patch`)."""
    sets = sorted(set(render_ipt.referenced_sets(v4 + v6)))
    headers = render_ipt.set_headers(_run(["ipset", "list", "-t"])) if sets else {}
    rules = hashlib.sha256()
    for part in (*render_ipt.owned_lines(v4), "--v6--", *render_ipt.owned_lines(v6), "--sets--"):
        rules.update(part.encode() + b"\n")
    return rules.hexdigest()[:16] + _sets_digest(sets, headers)


def _sets_digest(names: list[str], headers: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name in names:
        digest.update(f"{name}\n{headers.get(name, 'missing')}\n".encode())
    return digest.hexdigest()[:16]


def counters() -> dict[str, int]:
    """Packet totals of the deny counters (`deny.<direction>.<reason>.<mode>`) of both
    families, from the per-rule counters of `iptables-save -c` (drop metrics, agent.flows)."""
    text = "".join(_run([TOOLS[family][0], "-c", "-t", "filter"]) for family in (4, 6))
    return render_ipt.parse_counters(text)
