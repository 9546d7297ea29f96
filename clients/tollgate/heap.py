"""Garbage-collector settings for a long-running gateway process.

CPython's default gen-0 threshold (700 net allocations) is below what the requests in flight
hold at once, so under load it collects every request or two and each pass walks objects
that are all still alive: measured here at ~10 % of the gateway's CPU at concurrency 32 and
none of it reclaimed anything (bench/README.md, `bench/cpu_per_request.py`). Reference
counting frees almost everything a request makes; the collector is only there for cycles.

So, once start-up is done: collect, freeze what start-up built (config, catalogue, routes,
imported modules: never garbage, never walked again), and raise gen-0's threshold far above a
busy process's working set, so the collector runs when cycles can actually have piled up.

Those thresholds also mean a full collection almost never comes: the counts only grow by what
survives, and an oldest-generation pass needs 100 middle ones. Cycles that outlive a young pass
(an error's traceback holding the frames of a request that was still in flight) then sit in the
oldest generation for good: the soak's RSS slope of +7.6 MiB / 10 min (G2, bound 1) was that,
~1 KiB per request, all of it freed by one gc.collect() (tests/soak/heap.py). So a full
collection also runs on a timer, every FULL_COLLECT_S: garbage is bounded by a minute's worth.
"""

from __future__ import annotations

import asyncio
import gc

GEN0_THRESHOLD = 20_000  # net container allocations between young collections (default 700)
GEN1_THRESHOLD = 50  # young collections per middle one (default 10)
GEN2_THRESHOLD = 100  # middle collections per full one (default 10; CPython also waits for 25 % growth)
FULL_COLLECT_S = 60.0  # a full collection at least this often (see the module docstring)


def settle_heap() -> None:
    """Call once the process has started and before it serves: see the module docstring."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)


class FullCollections:
    """A full collection every `every_s` on the running loop (a timer chain: no task), until stop()."""

    def __init__(self, every_s: float = FULL_COLLECT_S) -> None:
        self._every_s = every_s
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(every_s, self._collect)

    def _collect(self) -> None:
        gc.collect()
        self._handle = self._loop.call_later(self._every_s, self._collect)

    def stop(self) -> None:
        self._handle.cancel()
