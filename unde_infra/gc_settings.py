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
from collections.abc import Iterator
from contextlib import contextmanager

# Young-generation threshold while the runner runs (the interpreter's default is 700). Every
# young collection also walks the young containers of the SDK's wait loop (a list and sets of
# every pending Output), so collections must be rare enough for that not to grow with the
# square of the resource count: at 100,000 a 64-shard preview took a quarter longer.
YOUNG_THRESHOLD = 1_000_000
_depth = 0


@contextmanager
def quiet_gc() -> Iterator[None]:
    """Run the body with the heap frozen and a high collection threshold, then put back the
    thresholds found and unfreeze (unless something had frozen objects before: the frozen then
    stay frozen, since they cannot be told apart). Nested uses keep the outermost settings."""
    global _depth
    if _depth:
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
        return
    saved = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, saved[1], saved[2])
    _depth = 1
    try:
        yield
    finally:
        _depth = 0
        if not frozen_before:
            gc.unfreeze()
        gc.set_threshold(*saved)
