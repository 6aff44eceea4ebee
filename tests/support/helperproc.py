"""The helper process (`agent.helper`) as the agent starts it, and with a broken part (for the
tests of what a part's failure does to the helper and to the agent's side of it)."""

from __future__ import annotations

import os

from agent import helper
from agent.dataplane.nft import render as render_nft


def helper_env() -> dict[str, str]:
    """The environment the agent starts its helper with: ours and the deny rules' NFLOG group."""
    return {**os.environ, helper.NFLOG_GROUP_ENV: str(render_nft.NFLOG_GROUP)}


# `python -c` program: the helper as `python -m agent.helper` runs it, but any request to its
# change watcher part raises.
BROKEN_CHANGES = """
from agent import helper
from agent.dataplane import watcher

def broken(self, message):
    raise RuntimeError("broken on purpose")

watcher.Watcher.handle = broken
helper.main()
"""
