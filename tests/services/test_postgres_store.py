"""The whole gateway on PostgreSQL (Config.database_url): migrations at start, API keys, chat,
ledger rows — read back both through the gateway and straight from the database."""

from __future__ import annotations

import psycopg2

from services.auth.api_keys import key_prefix
from tests.support.gateway import ADMIN_KEY, config, provider, run_gateway
from tests.support.postgres import postgres_url  # noqa: F401  (fixture)
from tests.support.sse_read import CHAT, bearer, chat_body


def query(url: str, sql: str) -> list[tuple]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


async def test_gateway_on_postgresql_end_to_end(tmp_path, fake_openai, postgres_url):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),), database_url=postgres_url)
    async with run_gateway(cfg) as gw:
        assert gw.app.store.dialect == "postgresql"
        ready = await gw.http.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["checks"]["store"] == "ok"

        # Migrations ran in the test's schema.
        tables = {t for (t,) in query(postgres_url, "SELECT table_name FROM information_schema.tables "
                                                    "WHERE table_schema = current_schema()")}
        assert {"schema_version", "usage", "api_keys", "tiers"} <= tables, tables
        assert query(postgres_url, "SELECT count(*) FROM schema_version")[0][0] >= 1

        key = await gw.new_key("pro")
        dump = repr(query(postgres_url, "SELECT * FROM api_keys"))
        assert key not in dump and key_prefix(key) in dump  # stored as a hash, shown by its prefix

        r = await gw.http.post(CHAT, json=chat_body("tokens-3"), headers=bearer(key))
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
        r = await gw.http.post(CHAT, json=chat_body("tokens-2", stream=True), headers=bearer(key))
        assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
        r = await gw.http.post(CHAT, json=chat_body("fault-503"), headers=bearer(key))
        assert r.status_code == 503

        rows = await gw.ledger()
        assert sorted((x.model, x.status, x.completion_tokens) for x in rows) == [
            ("fault-503", "upstream_error", 0), ("tokens-2", "ok", 2), ("tokens-3", "ok", 3)]
        in_db = query(postgres_url, "SELECT request_id, status, prompt_tokens, completion_tokens FROM usage")
        assert sorted((s, c) for _, s, _, c in in_db) == [("ok", 2), ("ok", 3), ("upstream_error", 0)]
        assert {rid for rid, *_ in in_db} == {x.request_id for x in rows}

        usage = await gw.http.get("/api/admin/usage", headers={"X-Admin-Key": ADMIN_KEY})
        assert usage.status_code == 200 and usage.json()["pagination"]["total"] == 3

    # A second start on the same schema: migrations are a no-op, the key and the rows are there.
    async with run_gateway(cfg) as gw:
        r = await gw.http.post(CHAT, json=chat_body("tokens-1"), headers=bearer(key))
        assert r.status_code == 200
        assert len(await gw.ledger()) == 4
