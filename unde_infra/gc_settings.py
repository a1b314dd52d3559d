"""Garbage-collector settings of the offline runner.

A preview allocates hundreds of thousands of short-lived objects (Outputs, futures, asyncio
tasks, protobuf messages) on top of a heap of long-lived ones (the imported SDKs, the inventory).
With the interpreter's defaults every young collection also walks the survivors, and the full
collections walk everything, which makes the run grow faster than its resource count. Frozen,
the heap already there is left out of every collection (`gc.freeze`, documented for exactly this:
objects that stay alive), and a high young threshold collects the rest in rare, large rounds.
Cyclic garbage is still collected; nothing is disabled.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# Young-generation threshold while the runner runs (the interpreter's default is 700). Most of
# what a preview allocates lives until its end (Outputs, their futures, the recorded requests),
# so a young collection walks nearly every object allocated since the last one and frees few:
# the collections cost the same in total whatever their size, and only the ones that never
# happen save time. A 64-shard preview of both stacks ends about 3.3 million objects above
# where it started (16 shards: 0.9 million), so it runs without a collection, at about 0.8 GB;
# a larger topology still gets one every 10 million objects.
YOUNG_THRESHOLD = 10_000_000
_depth = 0
_left_frozen = False


@contextmanager
def quiet_gc(*, leave_frozen: bool = False) -> Iterator[None]:
    """Run the body with the heap frozen and a high collection threshold, then put back the
    thresholds found and unfreeze (unless something had frozen objects before: the frozen then
    stay frozen, since they cannot be told apart). Nested uses keep the outermost settings.

    `leave_frozen`: what the body allocated is frozen too, never walked by a collection and
    freed only when the process exits. For a process that exits next (the `unde-infra preview`
    command), where the collection would walk all of it (about a second at 16 shards) only for
    the exit to free it anyway, and for a test worker, whose runs leave some 20 MB each."""
    global _depth, _left_frozen
    if _depth:
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
        return
    saved = gc.get_threshold()
    # Counting the frozen walks them all (0.3 s for the 2.7 million a test worker's runs leave),
    # so it is asked only where the answer is used and not yet known: after a run left its heap
    # frozen, something is frozen.
    frozen_before = leave_frozen or _left_frozen or bool(gc.get_freeze_count())
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, saved[1], saved[2])
    _depth = 1
    try:
        yield
    finally:
        _depth = 0
        if leave_frozen:
            gc.freeze()
            _left_frozen = True
        elif not frozen_before:
            gc.unfreeze()
        gc.set_threshold(*saved)
