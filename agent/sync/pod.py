"""One local pod's kernel state, and the state machine that decides from the dataplane's
answers whether its ruleset is adopted, verified, patched or replaced.

Why apart from the pass that drives it: these decisions are where enforcement can silently go
wrong (trusting a table someone edited, patching over a foreign commit), so they are pure
functions of (what the agent knows, what the kernel answered), unit-tested branch by branch
without a kernel. `agent.sync.kernel` sends the requests; this module only decides.

The states of a pod (`Status`): `unprotected` (no IP yet, or no namespace found), `enforced`
(its desired ruleset is in its namespace), `failed` (the dataplane refused or timed out; it is
retried with backoff). Knowledge about the namespace: `fingerprint` (of the ruleset known to
be there, None: unknown, read it back before trusting it), `digest` (of the kernel's whole
listing after our last read-back), `generation` (the namespace's nftables generation after our
last commit: unchanged means nobody else committed there since), `foreign` (base chains of
others that could undo the egress decision: while there are any, denied egress is dropped in
the output hook itself, see `interfaces`).
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
class PodState:
    """What the agent knows about one local pod's namespace and rules."""

    key: str
    target: netns.Target | None = None
    target_ips: tuple[str, ...] = ()
    fingerprint: str | None = None
    digest: str | None = None  # of the kernel's whole stateless listing after our apply
    generation: int | None = None
    rendered: backends.Program | None = None  # what our last commit holds (for patches)
    adopted: bool = False  # found in place at start: trusted by fingerprint until resync
    state: Status = Status.UNPROTECTED
    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""
    ruleset: ruleset.PodRuleset | None = None  # the last one committed by this agent
    quarantined_since: float | None = None  # wall clock, when this agent isolated the pod
    committed_wall: float | None = None  # wall clock of this agent's last commit here
    containment_errors: tuple[str, ...] = ()
    foreign: tuple[str, ...] = ()  # others' base chains that could undo our egress decision

    def fail(self, status: Status, error: str, now: float) -> bool:
        """Record a failure: unknown kernel state, retry with backoff. True when it deserves
        a log line (a new error, or the 1st, 10th, 100th time in a row)."""
        self.state = status
        self.fingerprint = None  # read it back before trusting it again
        self.failures += 1
        self.retry_at = now + backoff(self.failures)
        worth = error != self.last_error or self.failures in (1, 10, 100)
        self.last_error = error
        return worth

    def succeed(self) -> None:
        self.state, self.failures, self.retry_at, self.last_error = Status.ENFORCED, 0, 0.0, ""

    def unknown(self) -> None:
        """The kernel no longer holds what we know: rewrite before trusting it."""
        self.fingerprint, self.digest, self.generation = None, None, None


def interfaces(state: PodState) -> tuple[str, ...]:
    """The interfaces whose netdev egress hook drops what the output chain marked denied.

    None while a foreign base chain could undo that decision (clear the mark before the
    drop): the renderer then drops denied egress in the output hook itself, where no later
    chain can undo a drop. The sender sees EPERM instead of a timeout; nothing opens."""
    if state.target is None or state.foreign:
        return ()
    return state.target.interfaces


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
    target: netns.Target
    rs: ruleset.PodRuleset
    rendered: backends.Program
    bound: structlog.typing.FilteringBoundLogger
    verify: bool  # read the namespace back (resync), unless its generation proves no change
    previous: ruleset.PodRuleset | None  # what this agent committed before (strict mode)
    event: str = "ruleset_applied"
    script: str | None = None  # the incremental patch, when one applies
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
    def done(self) -> bool:
        return self.mode is not Mode.NONE

    def committed(self, mode: Mode, at: float, seconds: float) -> None:
        self.mode, self.committed_at, self.apply_seconds = mode, at, seconds


# -- the steps of a pass, in order ----------------------------------------------------------
def wants_generation(plan: Plan) -> bool:
    """Resync shortcut: a namespace whose nftables generation is still the one of our own last
    commit holds exactly what we committed, so it needs no listing."""
    state = plan.state
    return (
        plan.verify
        and not plan.suspect
        and state.fingerprint is not None
        and state.generation is not None
        and not state.adopted
    )


def after_generation(plan: Plan, found: protocol.Generation) -> None:
    if found.generation == plan.state.generation:
        plan.verify = False  # nothing was committed there since our own commit


def wants_examine(plan: Plan) -> bool:
    """First contact (adopt what an earlier agent left) and resync (drift) read-backs."""
    return plan.state.fingerprint is None or plan.verify


class Finding(enum.Enum):
    """What a read-back told about a pod's namespace."""

    NOTHING = "nothing"  # as expected (or nothing to adopt): go on
    ADOPTED = "adopted"  # an earlier agent left exactly this ruleset: taken over as is
    OLDER = "older"  # an older podseg ruleset is in place: compare as if it allowed all
    DRIFT = "drift"  # the kernel no longer holds exactly what we committed
    REVERIFY = "reverify"  # cannot vouch for it (or adopted): rewrite it once, atomically


def examine(plan: Plan, found: protocol.Examined) -> Finding:
    """Update the pod's state from a read-back and say what it found."""
    state, rendered = plan.state, plan.rendered
    if state.fingerprint is None:
        # First contact: an earlier agent may have left exactly this ruleset; adopt it.
        if found.fingerprint == rendered.fingerprint:
            state.fingerprint, state.digest, state.adopted = found.fingerprint, found.digest, True
            state.ruleset, state.generation, state.rendered = plan.rs, found.generation, rendered
            return Finding.ADOPTED
        if found.fingerprint is not None and plan.previous is None:
            # E.g. changed while the agent was down: strict mode must check what it cuts.
            plan.previous = ruleset.PodRuleset(plan.rs.namespace, plan.rs.pod)
            return Finding.OLDER
        return Finding.NOTHING
    if found.fingerprint != state.fingerprint or (
        state.digest is not None and found.digest != state.digest
    ):
        return Finding.DRIFT
    if state.digest is None:
        # Our last commit was not read back (it was the namespace's only one) and something was
        # committed in the namespace since: the fingerprint still matches but we cannot vouch
        # for the rest, so rewrite it (atomically, no gap) and read it back; if the rewrite
        # changed the listing, that something was an edit of our table (drift).
        state.fingerprint, plan.event, plan.seen = None, "ruleset_reverified", found.digest
        return Finding.REVERIFY
    if state.adopted:
        # An adopted table was vouched for by its fingerprint alone; rewrite it once
        # (atomically, no gap) so that from now on its digest is ours to compare.
        state.fingerprint, state.adopted, plan.event = None, False, "ruleset_reverified"
        return Finding.REVERIFY
    return Finding.NOTHING


def pending(plan: Plan) -> bool:
    """Whether the plan's ruleset still has to be committed."""
    return plan.state.fingerprint != plan.rendered.fingerprint


def patch_script(
    state: PodState, rendered: backends.Program, backend: backends.Backend
) -> str | None:
    """The incremental transaction from what our last commit holds to `rendered`, when the
    namespace holds exactly that commit (we committed it, nobody else since, not adopted)."""
    if (
        state.rendered is not None
        and state.generation is not None
        and state.fingerprint is not None
        and state.fingerprint == state.rendered.fingerprint
        and not state.adopted
    ):
        return backend.patch_script(state.rendered, rendered)
    return None


def after_patch(plan: Plan, reply: protocol.Patched, at: float) -> bool:
    """True when the patch is committed and vouched for; False when the pod must be replaced
    whole (someone else committed there, or another commit raced ours)."""
    if reply.applied and reply.sole:
        plan.state.generation, plan.state.digest = reply.generation, None
        plan.committed(Mode.PATCH, at, reply.seconds)
        return True
    return False


def after_replace(plan: Plan, reply: protocol.Committed, at: float) -> bool:
    """Record a whole-table commit. True when it reveals drift: a reverification rewrite that
    changed the listing found before it (someone had edited our table)."""
    plan.state.digest, plan.state.generation = reply.digest, reply.generation
    plan.committed(Mode.REPLACE, at, reply.seconds)
    return plan.seen is not None and plan.state.digest != plan.seen
