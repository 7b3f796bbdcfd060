"""Ids made by the application."""

from __future__ import annotations

import os
import time


def time_ordered_id() -> str:
    """32 hex digits, like a UUID's: the first 12 the time in milliseconds, the other 20 random (80 bits).
    Answers' recommendation ids: impressions are stored by them, and a btree of random keys writes to a
    random page for each new one (at millions of impressions, one a read from disk and a page written
    whole to the WAL after each checkpoint), where ids in time order are appended to its last pages."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"
