"""Poller over Changes (issue 20 point 5): a poller re-reads only when the store's change counter
moved (the event loop does nothing for an idle store), a change reaches it within a probe period,
and a failed read is retried at the next period as before."""

from __future__ import annotations

import asyncio
import logging
import threading

from services.clock import FakeClock
from services.core.poller import Changes, Poller
from services.store import Store

log = logging.getLogger("test.poller")


class Counter:
    """A probe (called on Changes' thread) over a number the test moves; `fail` makes it raise."""

    def __init__(self) -> None:
        self.n = 0
        self.fail = False
        self.calls = 0
        self.threads: set[str] = set()

    def __call__(self) -> int:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise ConnectionError("store down")
        return self.n


async def _until(pred, timeout_s: float = 3.0) -> None:
    end = asyncio.get_running_loop().time() + timeout_s
    while not pred():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.01)


async def test_reads_only_when_the_counter_moved():
    counter, reads = Counter(), []

    async def read():
        reads.append(counter.n)

    changes = Changes(counter, 0.05, log)
    poller = Poller("p", read, 0.05, log, at_once=True, changes=changes)
    changes.start()
    poller.start()
    try:
        await _until(lambda: len(reads) >= 1 and counter.calls >= 3)
        await asyncio.sleep(0.3)  # six probes, nothing moved
        assert len(reads) <= 2  # the first read, and one when the first probe's value arrived
        settled = len(reads)
        counter.n += 1
        await _until(lambda: len(reads) > settled, timeout_s=1.0)
        assert reads[-1] == 1
        await asyncio.sleep(0.3)
        assert len(reads) == settled + 1
        assert counter.threads == {"tollgate-store-changes"}  # never the event loop's thread
    finally:
        await poller.close()
        await changes.close()


async def test_a_failed_read_is_retried_without_a_change_and_a_failed_probe_reads_nothing():
    counter, reads, fail = Counter(), [], [True]

    async def read():
        reads.append(counter.n)
        if fail[0]:
            raise ConnectionError("store down")

    changes = Changes(counter, 0.05, log)
    poller = Poller("p", read, 0.05, log, at_once=True, changes=changes)
    changes.start()
    poller.start()
    try:
        await _until(lambda: len(reads) >= 4)  # the counter never moved: retried every period
        fail[0] = False
        await _until(lambda: not fail[0] and len(reads) >= 5)
        await asyncio.sleep(0.2)
        done = len(reads)
        await asyncio.sleep(0.3)
        assert len(reads) == done  # succeeded: quiet again
        counter.fail = True  # the store goes down: probes fail, nobody re-reads
        counter.n += 1
        await asyncio.sleep(0.3)
        assert len(reads) == done
        counter.fail = False  # back: the move is seen
        await _until(lambda: len(reads) > done, timeout_s=1.0)
    finally:
        await poller.close()
        await changes.close()


async def test_without_changes_every_period_as_before():
    reads = []

    async def read():
        reads.append(1)

    poller = Poller("p", read, 0.02, log)
    poller.start()
    try:
        await _until(lambda: len(reads) >= 5)
    finally:
        await poller.close()


async def test_over_a_real_store_a_write_by_another_replica_is_picked_up(tmp_path):
    clock = FakeClock()
    a, b = Store(None, str(tmp_path), clock), Store(None, str(tmp_path), clock)
    await a.start()
    await b.start()
    seen = []

    async def read():
        seen.append(await b.get_setting("model_aliases", ""))

    changes = Changes(b.change_count_blocking, 0.1, log)
    poller = Poller("aliases", read, 0.1, log, changes=changes)
    changes.start()
    poller.start()
    try:
        await _until(lambda: len(seen) >= 1)
        await asyncio.sleep(0.5)
        quiet = len(seen)
        assert quiet <= 2
        await a.set_setting("model_aliases", '{"smart":["m"]}')
        await _until(lambda: seen[-1] == '{"smart":["m"]}', timeout_s=1.0)
    finally:
        await poller.close()
        await changes.close()
        await a.close()
        await b.close()
