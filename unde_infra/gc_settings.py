"""Garbage-collector settings of the offline runner.

A preview allocates hundreds of thousands of short-lived objects (Outputs, futures, asyncio
tasks, protobuf messages) on top of a heap of long-lived ones (the imported SDKs, the inventory).
With the interpreter's defaults every young collection also walks the survivors, and the full
collections walk everything, which makes the run grow faster than its resource count. Frozen,
the heap already there is left out of every collection (`gc.freeze`, documented for exactly this:
objects that stay alive), and a higher young threshold collects the rest in fewer, larger rounds.
Cyclic garbage is still collected; nothing is disabled.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

# Young-generation threshold while the runner runs (the interpreter's default is 700).
YOUNG_THRESHOLD = int(os.environ.get("UNDE_GC_YOUNG", "100000"))
_depth = 0


@contextmanager
def quiet_gc() -> Iterator[None]:
    """Run the body with the heap frozen and a high collection threshold, then put back the
    thresholds found and unfreeze. Nested uses keep the outermost settings."""
    global _depth
    if _depth:
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
        return
    saved = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, saved[1], saved[2])
    _depth = 1
    try:
        yield
    finally:
        _depth = 0
        gc.set_threshold(*saved)
        gc.unfreeze()
