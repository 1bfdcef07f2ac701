"""Garbage-collector settings for a long-running server process.

A server builds most of its objects at start (modules, settings, URL patterns, the matching
worker's state) and keeps them for life. Python's collector would rescan them in every full
collection, a pause that grows with the process and lands on whichever request is running;
and with its default thresholds it runs a collection every few hundred allocations.
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 100)


def tune() -> None:
    """Move everything alive now out of the collector's sight and collect less often. Only in a
    process of its own: it holds for the whole process (in a test process, objects a test dropped
    before the call would never be collected)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
