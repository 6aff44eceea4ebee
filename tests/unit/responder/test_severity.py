"""The severity scale orders the Falco and the Wiz vocabularies on one line; thresholds parse."""

from __future__ import annotations

import pytest

from agent.responder import severity

S = severity.Severity


def test_the_scale_orders_both_vocabularies() -> None:
    falco_order = [severity.FALCO[w] for w in ("debug", "informational", "notice", "warning")]
    falco_order += [severity.FALCO[w] for w in ("error", "critical", "alert", "emergency")]
    assert falco_order == sorted(falco_order) and len(set(falco_order)) == 8
    wiz_order = [severity.WIZ[w] for w in ("informational", "low", "medium", "high", "critical")]
    assert wiz_order == sorted(wiz_order) and len(set(wiz_order)) == 5
    assert severity.WIZ["critical"] == severity.FALCO["critical"]
    assert severity.threshold("none") is None
    assert severity.threshold("HIGH") is S.ERROR
    with pytest.raises(severity.UnknownSeverity):
        severity.threshold("urgent")
