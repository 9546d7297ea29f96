"""tollgate.heap: a cycle that reached the oldest generation is freed by the timer's full collection."""

from __future__ import annotations

import asyncio
import gc
import weakref

from tollgate.heap import FullCollections


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


async def test_full_collections_free_old_cycles_and_stop() -> None:
    gc.disable()  # only the timer may collect here
    try:
        node = Node()
        gone = weakref.ref(node)
        gc.collect()  # survives: now in the oldest generation, where the raised thresholds leave it
        del node
        assert gone() is not None
        collections = FullCollections(every_s=0.05)
        for _ in range(100):
            if gone() is None:
                break
            await asyncio.sleep(0.01)
        assert gone() is None
        collections.stop()
        later = Node()
        late = weakref.ref(later)
        del later
        await asyncio.sleep(0.15)
        assert late() is not None  # stopped: no more collections
    finally:
        gc.enable()
