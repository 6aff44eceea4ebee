"""One local pod's kernel state, and the state machine that decides from the dataplane's
answers whether its ruleset is adopted, verified, patched or replaced.

Why apart from the pass that drives it: these decisions are where enforcement can silently go
wrong (trusting a table someone edited, patching over a foreign commit), so they are pure
functions of (what the agent knows, what the kernel answered), unit-tested branch by branch
without a kernel. `agent.sync.kernel` sends the requests; this module only decides.

The states of a pod (`Status`): `unprotected` (no IP yet, or no namespace found), `enforced`
(its desired ruleset is in its namespaces), `failed` (the dataplane refused or timed out; it is
retried with backoff). A pod's rules go to every namespace holding its addresses (a `Slot`
each, usually one; `agent.dataplane.netns` says why). Knowledge about each namespace:
`fingerprint` (of the ruleset known to be there, None: unknown, read it back before trusting
it), `digest` (of the kernel's whole listing after our last read-back), `generation` (the
namespace's nftables generation after our last commit: unchanged means nobody else committed
there since), `foreign` (base chains of others that could undo the egress decision: while
there are any, denied egress is dropped in the output hook itself, see `interfaces`).
"""

from __future__ import annotations

import dataclasses
import enum

import structlog

from agent import model
from agent.calc import ruleset
from agent.dataplane import backends, netns, protocol

MAX_BACKOFF = 30.0


class Status(enum.StrEnum):
    ENFORCED = "enforced"
    UNPROTECTED = "unprotected"
    FAILED = "failed"


def backoff(failures: int) -> float:
    """Seconds before retrying a pod that failed `failures` times in a row."""
    return min(0.1 * float(2 ** min(failures, 9)), MAX_BACKOFF)


@dataclasses.dataclass
class Slot:
    """One namespace a pod's rules go to, and what the agent knows of its tables there.
    `lockdown`: the namespace is contested, it gets the pod's ruleset locked down."""

    target: netns.Target
    lockdown: bool = False
    fingerprint: str | None = None
    digest: str | None = None  # of the kernel's whole stateless listing after our apply
    generation: int | None = None
    rendered: backends.Program | None = None  # what our last commit holds (for patches)
    adopted: bool = False  # found in place at start: trusted by fingerprint until resync
    ruleset: ruleset.PodRuleset | None = None  # the last one committed here by this agent
    foreign: tuple[str, ...] = ()  # others' base chains that could undo our egress decision
    token: str | None = None  # iptables: the generation token of our sets' names

    def unknown(self) -> None:
        """The kernel no longer holds what we know: rewrite before trusting it."""
        self.fingerprint, self.digest, self.generation, self.token = None, None, None, None


@dataclasses.dataclass
class PodState:
    """What the agent knows about one local pod's namespaces and rules."""

    key: str
    slots: dict[tuple[str, int], Slot] = dataclasses.field(default_factory=dict)
    target_ips: tuple[str, ...] = ()  # the pod's IPs when it was placed
    state: Status = Status.UNPROTECTED
    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""
    quarantined_since: float | None = None  # wall clock, when this agent isolated the pod
    committed_wall: float | None = None  # wall clock of this agent's last commit here
    containment_errors: tuple[str, ...] = ()
    placement: tuple[str, ...] = ()  # what was last reported about its namespaces

    @property
    def target(self) -> netns.Target | None:
        """The pod's first namespace (by path), None when it has none."""
        return next(iter(self.slots.values())).target if self.slots else None

    @property
    def fingerprint(self) -> str | None:
        """The first namespace's ruleset fingerprint once every namespace of the pod is known
        to hold one of ours; None while one is unknown (read it back before trusting it)."""
        known = [slot.fingerprint for slot in self.slots.values()]
        return known[0] if known and None not in known else None

    @property
    def ruleset(self) -> ruleset.PodRuleset | None:
        """The ruleset last committed in the pod's first namespace that is not locked down."""
        held = [slot.ruleset for slot in self.slots.values() if not slot.lockdown]
        return held[0] if held else None

    @property
    def adopted(self) -> bool:
        return any(slot.adopted for slot in self.slots.values())

    def fail(self, status: Status, error: str, now: float) -> bool:
        """Record a failure: unknown kernel state, retry with backoff. True when it deserves
        a log line (a new error, or the 1st, 10th, 100th time in a row)."""
        self.state = status
        for slot in self.slots.values():
            slot.fingerprint = None  # read it back before trusting it again
        self.failures += 1
        self.retry_at = now + backoff(self.failures)
        worth = error != self.last_error or self.failures in (1, 10, 100)
        self.last_error = error
        return worth

    def succeed(self) -> None:
        self.state, self.failures, self.retry_at, self.last_error = Status.ENFORCED, 0, 0.0, ""


def interfaces(slot: Slot) -> tuple[str, ...]:
    """The interfaces whose netdev egress hook drops what the output chain marked denied.

    None while a foreign base chain could undo that decision (clear the mark before the
    drop): the renderer then drops denied egress in the output hook itself, where no later
    chain can undo a drop. The sender sees EPERM instead of a timeout; nothing opens."""
    return () if slot.foreign else slot.target.interfaces


class Mode(enum.StrEnum):
    """How a plan's ruleset reached the kernel."""

    NONE = ""  # not (yet) committed: already in place, or failed
    PATCH = "patch"
    REPLACE = "replace"


@dataclasses.dataclass
class Plan:
    """One pod's work in a pass: its desired ruleset, then what the kernel steps found.

    A pass computes every affected pod's plan first (pure), then reads back, patches and
    replaces in a few batched worker requests (`agent.sync.kernel`), then finishes each pod."""

    pod: model.Pod
    state: PodState
    slot: Slot
    rs: ruleset.PodRuleset
    rendered: backends.Program
    bound: structlog.typing.FilteringBoundLogger
    verify: bool  # read the namespace back (resync), unless its generation proves no change
    previous: ruleset.PodRuleset | None  # what this agent committed before (strict mode)
    event: str = "ruleset_applied"
    patch: protocol.Request[protocol.Patched] | None = None  # the incremental update, if any
    mode: Mode = Mode.NONE
    committed_at: float = 0.0  # monotonic time the commit's reply arrived
    apply_seconds: float = 0.0  # the worker's own time for the commit
    failed: bool = False
    # Reverification: the digest of the listing found before our rewrite (compared after it)
    seen: str | None = None
    # A commit not ours was notified in the namespace: read it back in full, whatever its
    # generation says (a stranger's commit followed by ours leaves the generation at ours).
    suspect: bool = False

    @property
    def target(self) -> netns.Target:
        return self.slot.target

    @property
    def done(self) -> bool:
        return self.mode is not Mode.NONE

    def committed(self, mode: Mode, at: float, seconds: float) -> None:
        self.mode, self.committed_at, self.apply_seconds = mode, at, seconds


# -- the steps of a pass, in order ----------------------------------------------------------
def wants_generation(plan: Plan) -> bool:
    """Resync shortcut: a namespace whose nftables generation is still the one of our own last
    commit holds exactly what we committed, so it needs no listing."""
    slot = plan.slot
    return (
        plan.verify
        and not plan.suspect
        and slot.fingerprint is not None
        and slot.generation is not None
        and not slot.adopted
    )


def after_generation(plan: Plan, found: protocol.Generation) -> None:
    if found.generation == plan.slot.generation:
        plan.verify = False  # nothing was committed there since our own commit


def wants_examine(plan: Plan) -> bool:
    """First contact (adopt what an earlier agent left) and resync (drift) read-backs."""
    return plan.slot.fingerprint is None or plan.verify


class Finding(enum.Enum):
    """What a read-back told about a pod's namespace."""

    NOTHING = "nothing"  # as expected (or nothing to adopt): go on
    ADOPTED = "adopted"  # an earlier agent left exactly this ruleset: taken over as is
    OLDER = "older"  # an older podseg ruleset is in place: compare as if it allowed all
    DRIFT = "drift"  # the kernel no longer holds exactly what we committed
    REVERIFY = "reverify"  # cannot vouch for it (or adopted): rewrite it once, atomically


def examine(plan: Plan, found: protocol.Examined) -> Finding:
    """Update what the agent knows of the namespace from a read-back and say what it found."""
    slot, rendered = plan.slot, plan.rendered
    if slot.fingerprint is None:
        # First contact: an earlier agent may have left exactly this ruleset; adopt it.
        if found.fingerprint == rendered.fingerprint:
            slot.fingerprint, slot.digest, slot.adopted = found.fingerprint, found.digest, True
            slot.ruleset, slot.generation, slot.rendered = plan.rs, found.generation, rendered
            return Finding.ADOPTED
        if found.fingerprint is not None and plan.previous is None:
            # E.g. changed while the agent was down: strict mode must check what it cuts.
            plan.previous = ruleset.PodRuleset(plan.rs.namespace, plan.rs.pod)
            return Finding.OLDER
        return Finding.NOTHING
    if found.fingerprint != slot.fingerprint or (
        slot.digest is not None and found.digest != slot.digest
    ):
        return Finding.DRIFT
    if slot.digest is None:
        # Our last commit was not read back (it was the namespace's only one) and something was
        # committed in the namespace since: the fingerprint still matches but we cannot vouch
        # for the rest, so rewrite it (atomically, no gap) and read it back; if the rewrite
        # changed the listing, that something was an edit of our table (drift).
        slot.fingerprint, plan.event, plan.seen = None, "ruleset_reverified", found.digest
        return Finding.REVERIFY
    if slot.adopted:
        # An adopted table was vouched for by its fingerprint alone; rewrite it once
        # (atomically, no gap) so that from now on its digest is ours to compare.
        slot.fingerprint, slot.adopted, plan.event = None, False, "ruleset_reverified"
        return Finding.REVERIFY
    return Finding.NOTHING


def pending(plan: Plan) -> bool:
    """Whether the plan's ruleset still has to be committed."""
    return plan.slot.fingerprint != plan.rendered.fingerprint


def patch_request(
    slot: Slot, rendered: backends.Program, backend: backends.Backend
) -> protocol.Request[protocol.Patched] | None:
    """The incremental update from what our last commit holds to `rendered`, when the
    namespace holds exactly that commit (we committed it, nobody else since, not adopted)
    and the backend knows how to check that (nftables generation, iptables fingerprint set)."""
    if (
        slot.rendered is not None
        and slot.fingerprint is not None
        and slot.fingerprint == slot.rendered.fingerprint
        and not slot.adopted
    ):
        script = backend.patch_script(slot.rendered, rendered)
        if script:
            known = backends.Known(slot.generation, slot.token, slot.digest)
            return backend.patch_request(slot.target, rendered, script, known)
    return None


def after_patch(plan: Plan, reply: protocol.Patched, at: float) -> bool:
    """True when the patch is committed and vouched for; False when the pod must be replaced
    whole (someone else committed there, or another commit raced ours)."""
    if reply.applied and reply.sole:
        plan.slot.generation, plan.slot.digest = reply.generation, reply.digest
        plan.committed(Mode.PATCH, at, reply.seconds)
        return True
    return False


def after_replace(plan: Plan, reply: protocol.Committed, at: float) -> bool:
    """Record a whole-table commit. True when it reveals drift: a reverification rewrite that
    changed the listing found before it (someone had edited our table)."""
    plan.slot.digest, plan.slot.generation = reply.digest, reply.generation
    plan.slot.token = reply.token
    plan.committed(Mode.REPLACE, at, reply.seconds)
    return plan.seen is not None and plan.slot.digest != plan.seen
