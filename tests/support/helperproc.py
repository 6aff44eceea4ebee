"""The helper process (`agent.helper`) with a broken part, for the tests of what a part's failure
does to the helper and to the agent's side of it."""

from __future__ import annotations

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
