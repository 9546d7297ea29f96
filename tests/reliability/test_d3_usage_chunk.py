"""RELIABILITY D3: the usage chunk comes only when asked, right before exactly one [DONE]; after a
failover the answer names who answered; the failed tries are not billed.
"""

from __future__ import annotations

import orjson

from services.config.defaults import DEFAULT_TIERS
from services.config.schema import TierConfig
from services.store.records import UsageFilter
from tests.reliability.scripted import err, ok, run_scripted
from tests.support.gateway import config, provider, run_gateway
from tests.support.sse_read import CHAT, bearer, chat_body, read_events

TIERS = DEFAULT_TIERS + (TierConfig("d3", tpd=1_000_000),)


async def stream_events(gw, key: str, **extra) -> tuple[dict, list[str]]:
    async with gw.http.stream("POST", CHAT, json=chat_body("gpt-4o-mini", stream=True, **extra), headers=bearer(key)) as r:
        assert r.status_code == 200
        return dict(r.headers), await read_events(r)


async def test_usage_chunk_only_when_asked_then_one_done(tmp_path):
    async with run_scripted(ok(tokens=6)) as up:
        cfg = config(tmp_path, providers=(provider("primary", up.base_url),))
        async with run_gateway(cfg) as gw:
            key = await gw.new_key()

            _, events = await stream_events(gw, key, stream_options={"include_usage": True})
            assert events.count("[DONE]") == 1 and events[-1] == "[DONE]"
            chunks = [orjson.loads(e) for e in events[:-1]]
            with_usage = [c for c in chunks if c.get("usage")]
            assert len(with_usage) == 1 and with_usage[0] is chunks[-1]  # last, right before [DONE]
            assert with_usage[0]["choices"] == []
            assert with_usage[0]["usage"]["prompt_tokens"] == 7
            assert with_usage[0]["usage"]["completion_tokens"] == 6
            assert with_usage[0]["usage"]["total_tokens"] == 13

            _, events = await stream_events(gw, key)
            assert events.count("[DONE]") == 1 and events[-1] == "[DONE]"
            assert not any(orjson.loads(e).get("usage") for e in events[:-1])
            # The gateway still asked the upstream for usage, to meter: both rows are exact.
            rows = await gw.ledger()
            assert [(r.prompt_tokens, r.completion_tokens, r.estimated) for r in rows] == [(7, 6, False)] * 2


async def test_after_failover_the_answer_names_who_answered_and_failed_tries_are_free(tmp_path):
    async with run_scripted(err(503)) as a, run_scripted(ok(tokens=5)) as b:
        cfg = config(tmp_path, strategy="priority", tiers=TIERS,
                     providers=(provider("a", a.base_url, keys=("sk-a",)), provider("b", b.base_url, keys=("sk-b",), priority=1)))
        async with run_gateway(cfg) as gw:
            key = await gw.new_key("d3")
            headers, events = await stream_events(gw, key, stream_options={"include_usage": True})
            assert (headers["x-llm-provider"], headers["x-llm-key-id"], headers["x-llm-model"]) == ("b", "b-k1", "gpt-4o-mini")
            assert "a/a-k1=server(503)" in headers["x-tollgate-route"]  # the tries before b's first token
            chunks = [orjson.loads(e) for e in events if e != "[DONE]"]
            assert {c["model"] for c in chunks} == {"gpt-4o-mini"}
            assert chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12,
                                           **{k: v for k, v in chunks[-1]["usage"].items()
                                              if k not in ("prompt_tokens", "completion_tokens", "total_tokens")}}
            assert events.count("[DONE]") == 1

            r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=bearer(key))
            assert r.status_code == 200
            assert r.headers["X-LLM-Provider"] == "b" and r.json()["model"] == "gpt-4o-mini"

            rows = await gw.ledger()
            assert len(rows) == 2 and len(a.calls) >= 2 and len(b.calls) == 2
            for row in rows:
                # One row per request: b's answer, b's usage; a's 503s cost nothing.
                assert (row.provider, row.provider_key_id, row.status) == ("b", "b-k1", "ok")
                assert (row.prompt_tokens, row.completion_tokens, row.estimated) == (7, 5, False)
                assert row.attempts >= 2
            totals = await gw.app.store.usage_totals(UsageFilter())
            assert totals["prompt_tokens"] + totals["completion_tokens"] == 24
            d = await gw.app.limiter.peek("ak:" + rows[0].key_id, gw.app.quotas.token_rules("d3"))
            assert d.used == 24  # charged once per request, with b's real usage
