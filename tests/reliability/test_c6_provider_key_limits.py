"""RELIABILITY C6: provider keys' own limits. Three keys × 10 rpm: 31 requests → 10 served by
each (X-LLM-Key-ID), the 31st gets 429 (nowhere else to go); a key's daily quota resets at
midnight of quota_timezone, not UTC's, to the second.

A whole gateway on a FakeClock, so a minute and a day pass at once.
"""

from __future__ import annotations

from collections import Counter

from services.clock import FakeClock
from tests.reliability.scripted import run_gateway_on, run_scripted
from tests.support.gateway import config, provider
from tests.support.sse_read import CHAT, bearer, chat_body

START = 1_700_000_000.0  # Tue 2023-11-14 22:13:20 UTC = 17:13:20 in New York (EST, UTC-5)
NY_MIDNIGHT = 1_700_024_400.0  # Wed 2023-11-15 00:00:00 EST


async def test_three_keys_at_10_rpm_serve_10_each_and_the_31st_is_429(tmp_path):
    clock = FakeClock(START)
    async with run_scripted() as up:
        cfg = config(tmp_path, strategy="round-robin", providers=(
            provider("primary", up.base_url, keys=("sk-1", "sk-2", "sk-3"), rpm=10),))
        async with run_gateway_on(cfg, clock) as gw:
            auth = bearer(await gw.new_key())
            answers = [await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth) for _ in range(31)]
            served = Counter(r.headers["X-LLM-Key-ID"] for r in answers if r.status_code == 200)
            assert served == {"primary-k1": 10, "primary-k2": 10, "primary-k3": 10}
            last = answers[-1]
            assert last.status_code == 429, last.text
            assert 1 <= int(last.headers["Retry-After"]) <= 60
            assert len(up.calls) == 30  # the 31st never reached the provider
            # A minute later each key has its 10 again.
            clock.advance(60.0)
            answers = [await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth) for _ in range(30)]
            assert Counter(r.headers["X-LLM-Key-ID"] for r in answers) == {"primary-k1": 10, "primary-k2": 10, "primary-k3": 10}


async def test_the_31st_goes_elsewhere_when_there_is_an_elsewhere(tmp_path):
    clock = FakeClock(START)
    async with run_scripted() as up, run_scripted() as spare:
        cfg = config(tmp_path, strategy="priority", providers=(
            provider("primary", up.base_url, keys=("sk-1", "sk-2", "sk-3"), rpm=10),
            provider("spare", spare.base_url, keys=("sk-spare",), priority=1)))
        async with run_gateway_on(cfg, clock) as gw:
            auth = bearer(await gw.new_key())
            answers = [await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth) for _ in range(31)]
            assert {r.status_code for r in answers} == {200}
            served = Counter(r.headers["X-LLM-Key-ID"] for r in answers)
            assert served == {"primary-k1": 10, "primary-k2": 10, "primary-k3": 10, "spare-k1": 1}


async def test_daily_quota_resets_at_midnight_of_the_quota_timezone(tmp_path):
    clock = FakeClock(START)
    async with run_scripted() as up:
        cfg = config(tmp_path, quota_timezone="America/New_York", providers=(
            provider("primary", up.base_url, keys=("sk-1",), daily_quota=3),))
        async with run_gateway_on(cfg, clock) as gw:
            auth = bearer(await gw.new_key())
            codes = [(await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)).status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            # Past midnight UTC (19:00 in New York) nothing resets.
            clock.advance(1_700_006_400.0 + 60 - START)
            r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
            assert r.status_code == 429
            assert abs(int(r.headers["Retry-After"]) - (NY_MIDNIGHT - clock.now())) <= 1
            clock.advance(NY_MIDNIGHT - 1.0 - clock.now())
            r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
            assert r.status_code == 429
            clock.advance(2.0)  # 1 s past New York's midnight
            r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
            assert r.status_code == 200 and r.headers["X-LLM-Key-ID"] == "primary-k1"
            assert len(up.calls) == 4
