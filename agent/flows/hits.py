"""Per-policy hit counts: turns the kernel's per-policy counters into `podseg_rule_hits_total`.

Why a module of its own: the counters are read together with the deny counters (one listing
per pod namespace, `agent.flows.collector`), but their labels come from NetworkPolicies, not
from pods, so they are bounded by the number of policies and survive the pods that fed them.
The counter names in a namespace are only a claim (a pod may write into its own namespace), so
a name becomes a label only when it names a policy the agent knows. Counter semantics: each
pod's reading is turned into a delta against the previous reading of the same pod (a smaller
value means the table was replaced and its counters restarted from zero), so the exported
total only ever grows, whatever pods come and go.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import structlog

from agent import metrics, model
from agent.dataplane.nft import render as render_nft

log = structlog.get_logger(__name__)


class Hits:
    """The label sets exported so far, and the hashed-name tokens of the known policies."""

    def __init__(self) -> None:
        self.series: set[tuple[str, str, str]] = set()
        self._hashed: dict[str, str] = {}
        self.unknown = 0

    def add(
        self,
        name: str,
        delta: int,
        policies: Mapping[str, model.NetworkPolicy],
    ) -> bool:
        """Book `delta` packets of the counter `name`; False when it is not a hit counter."""
        parsed = render_nft.parse_hit_counter_name(name)
        if parsed is None:
            return False
        direction, token = parsed
        key = self._resolve(token, policies)
        if key is None:
            self.unknown += 1  # a policy deleted since the last apply, or not ours: no label
            return True
        policy = policies[key]
        labels = (policy.namespace, policy.name, direction)
        self.series.add(labels)
        if delta > 0:
            metrics.RULE_HITS.labels(*labels).inc(delta)
        return True

    def _resolve(self, token: str, policies: Mapping[str, model.NetworkPolicy]) -> str | None:
        if not token.startswith("~"):
            return token if token in policies else None
        if token not in self._hashed or self._hashed[token] not in policies:
            self._hashed = {render_nft.policy_token(key): key for key in policies}
        return self._hashed.get(token)

    def drop_gone(self, policies: Mapping[str, model.NetworkPolicy]) -> None:
        """Remove the series of policies that no longer exist."""
        live = {(p.namespace, p.name) for p in policies.values()}
        for labels in sorted(s for s in self.series if s[:2] not in live):
            self.series.discard(labels)
            with contextlib.suppress(KeyError):
                metrics.RULE_HITS.remove(*labels)
            log.info("rule_hit_series_removed", namespace=labels[0], policy=labels[1])
