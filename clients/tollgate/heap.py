"""Garbage-collector settings for a long-running gateway process.

CPython's default gen-0 threshold (700 net allocations) is below what the requests in flight
hold at once, so under load it collects every request or two and each pass walks objects
that are all still alive: measured here at ~10 % of the gateway's CPU at concurrency 32 and
none of it reclaimed anything (bench/README.md, `bench/cpu_per_request.py`). Reference
counting frees almost everything a request makes; the collector is only there for cycles.

So, once start-up is done: collect, freeze what start-up built (config, catalogue, routes,
imported modules: never garbage, never walked again), and raise gen-0's threshold far above a
busy process's working set, so the collector runs when cycles can actually have piled up.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 20_000  # net container allocations between young collections (default 700)
GEN1_THRESHOLD = 50  # young collections per middle one (default 10)
GEN2_THRESHOLD = 100  # middle collections per full one (default 10; CPython also waits for 25 % growth)


def settle_heap() -> None:
    """Call once the process has started and before it serves: see the module docstring."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
