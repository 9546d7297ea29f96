"""RELIABILITY A8: a per-key concurrency cap turns the excess away with our own 429 and leaves
the breaker alone (a full key is busy, not broken: envoy#25487); a failing key leaves its
sibling in use; each replica counts its own failures.

The cap is Router.key_caps (key id -> max tries in flight), filled from ProviderConfig's
`max_in_flight` where the config has it and settable at run time, as here.
"""

from __future__ import annotations

import asyncio

from tests.reliability.scripted import err, ok, run_scripted
from tests.support.gateway import config, provider, run_gateway
from tests.support.sse_read import CHAT, bearer, chat_body


async def test_cap_4_with_40_in_parallel_serves_4_and_turns_36_away_with_429(tmp_path):
    async with run_scripted(ok(delay_s=0.5)) as up:  # slow enough that all 40 overlap
        cfg = config(tmp_path, strategy="priority", providers=(provider("primary", up.base_url, keys=("sk-a",)),))
        async with run_gateway(cfg) as gw:
            gw.app.router.key_caps["primary-k1"] = 4
            auth = bearer(await gw.new_key())
            answers = await asyncio.gather(*(gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth) for _ in range(40)))
            codes = [r.status_code for r in answers]
            assert (codes.count(200), codes.count(429)) == (4, 36)
            busy = [r for r in answers if r.status_code == 429]
            assert {r.headers["Retry-After"] for r in busy} == {"1"}
            assert {r.json()["error"]["code"] for r in busy} == {"rate_limit_exceeded"}
            assert len(up.calls) == 4 and up.max_in_flight == 4
            assert gw.app.router.breaker.snapshot() == {}  # busy is not broken
            # The slots come back: the next request is served.
            r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
            assert r.status_code == 200


async def test_a_capped_key_spills_over_to_its_sibling(tmp_path):
    async with run_scripted(ok(delay_s=0.5)) as up:
        cfg = config(tmp_path, strategy="exhaust-first", providers=(provider("primary", up.base_url, keys=("sk-a", "sk-b")),))
        async with run_gateway(cfg) as gw:
            gw.app.router.key_caps.update({"primary-k1": 2, "primary-k2": 2})
            auth = bearer(await gw.new_key())
            answers = await asyncio.gather(*(gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth) for _ in range(6)))
            served = sorted(r.headers["X-LLM-Key-ID"] for r in answers if r.status_code == 200)
            assert served == ["primary-k1", "primary-k1", "primary-k2", "primary-k2"]
            assert [r.status_code for r in answers].count(429) == 2
            spilled = [r.headers["X-Tollgate-Route"] for r in answers if r.headers.get("X-LLM-Key-ID") == "primary-k2"]
            assert spilled == ["primary/primary-k1=key_busy, primary/primary-k2=ok(200)"] * 2


async def test_a_failing_key_leaves_its_sibling_in_use(tmp_path):
    async with run_scripted() as up:
        up.by_key["sk-a"] = err(503)  # the provider fails one of our keys only
        cfg = config(tmp_path, strategy="round-robin", providers=(provider("primary", up.base_url, keys=("sk-a", "sk-b")),))
        async with run_gateway(cfg) as gw:
            auth = bearer(await gw.new_key())
            answers = [await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth) for _ in range(20)]
            assert {r.status_code for r in answers} == {200}
            assert {r.headers["X-LLM-Key-ID"] for r in answers} == {"primary-k2"}
            breaker = gw.app.router.breaker
            assert (breaker.state("primary-k1"), breaker.state("primary-k2")) == ("open", "closed")
            assert up.keys().count("sk-a") == 5  # five in a row, then nothing more
            assert up.keys().count("sk-b") == 20
