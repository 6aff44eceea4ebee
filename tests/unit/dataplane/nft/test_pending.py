"""The pending table's removal script and owner, as podseg-cni writes the table."""

from __future__ import annotations

from agent.dataplane.nft import pending


def test_delete_script_is_idempotent_and_touches_only_the_pending_table() -> None:
    script = pending.delete_script()
    assert script == "table inet podseg-pending\ndelete table inet podseg-pending\n"
    assert "table inet podseg\n" not in script


def test_owner_from_listing() -> None:
    listing = 'table inet podseg-pending {\n\tcomment "podseg pending pod=x/web-1 cid=c0ffee"\n}'
    assert pending.owner(listing) == "x/web-1"
    assert pending.owner("table inet podseg-pending {\n}") is None
