"""The cyclic garbage collector: its settings for the app, and its pause around large bodies.

A request's objects hold no reference cycles and die with it (reference counting frees them),
so a pass of the collector during a request frees nothing: it only walks the record being read.
A small request never allocates enough to set one off; a record of 23,000 readings the rules read
set off three a call, about 60 ms of a 500 ms evaluation (docs/performance.md). So the collector
is paused while a large body is read and evaluated. Pauses nest (two large bodies in flight):
it runs again when the last one ends, and then finds what little cyclic garbage was left.
"""

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

THRESHOLD = 100_000
"""Allocations between two passes over the youngest objects. A 6 MB record allocates ~10^6
objects; with the default (700) the collector ran hundreds of times per request, over all of
them (20,000 Observations: parse and triage 330 ms -> 197 ms with this threshold)."""
LARGE_BODY_BYTES = 1_000_000
"""A body over this many bytes (about 3,000 Observations) is read with the collector paused."""

_lock = threading.Lock()
_pauses = 0


def configure() -> None:
    """Settle the objects built at start-up (modules, knowledge base, validators) where the
    collector never walks them, and set the threshold."""
    gc.freeze()
    gc.set_threshold(THRESHOLD, 50, 100)


@contextmanager
def paused_for(body_bytes: int) -> Iterator[None]:
    """The collector paused for the block when the body is large; nothing otherwise."""
    if body_bytes <= LARGE_BODY_BYTES:
        yield
        return
    global _pauses
    with _lock:
        _pauses += 1
        gc.disable()
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0:
                gc.enable()
