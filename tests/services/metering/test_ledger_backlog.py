"""RELIABILITY D6: a store that cannot write fills the ledger's buffer up to its bound, then the
gateway answers 503 + Retry-After instead of serving requests it could not meter; once the store
is back every row is written, none lost."""

from __future__ import annotations

from tests.support.gateway import config, provider, run_gateway
from tests.support.sse_read import CHAT, bearer, chat_body


async def test_full_ledger_buffer_refuses_with_503_and_loses_nothing(tmp_path, fake_openai, monkeypatch):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),))
    async with run_gateway(cfg) as gw:
        key = await gw.new_key()

        async def broken(rows):
            raise ConnectionError("the database went away")

        monkeypatch.setattr(gw.app.store, "upsert_usage", broken)
        gw.app.ledger.max_buffer = 5
        answers = [await gw.http.post(CHAT, json=chat_body("tokens-1"), headers=bearer(key)) for _ in range(8)]
        assert [r.status_code for r in answers] == [200] * 5 + [503] * 3
        for r in answers[5:]:
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["error"]["code"] == "ledger_backlog"
        assert gw.app.ledger.pending == 8  # kept, not dropped
        assert len(fake_openai.requests) == 5  # the refused ones never went upstream

        monkeypatch.undo()  # the store is back
        rows = await gw.ledger()
        assert gw.app.ledger.pending == 0
        assert sorted(r.status for r in rows) == ["ok"] * 5 + ["unavailable"] * 3
        assert (await gw.http.post(CHAT, json=chat_body("tokens-1"), headers=bearer(key))).status_code == 200
