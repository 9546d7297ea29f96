"""Issue 16 across two gateway processes on one PostgreSQL and one Redis: a $ budget holds exactly,
and suspension / logout reach the other replica within a second (measured, printed)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp

from tests.reliability.replicas import replica, write_config
from tests.support.gateway import ADMIN_KEY
from tests.support.postgres import postgres_url  # noqa: F401  (fixture)
from tests.support.redis_server import redis_url  # noqa: F401  (fixture)

ADMIN = {"X-Admin-Key": ADMIN_KEY}
PASSWORD = "correct horse battery"
MAX_TOKENS = 10_000  # worst case 10,000 x $0.6/Mtok = $0.006 per request on gpt-4o-mini
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": MAX_TOKENS}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def two(tmp_path, fake_openai, postgres_url, redis_url):
    cfg = write_config(tmp_path / "tollgate.toml", fake_openai.base_url,
                       {"capped": {"rpm": 10_000, "budget_usd_day": 0.063}})
    shared = {"DATABASE_URL": postgres_url, "REDIS_URL": redis_url}
    async with contextlib.AsyncExitStack() as stack:
        a, b = await asyncio.gather(*(stack.enter_async_context(replica(tmp_path / n, cfg, n, **shared))
                                      for n in ("gw1", "gw2")))
        async with aiohttp.ClientSession() as s:
            yield a, b, s


async def user_with_token(s: aiohttp.ClientSession, url: str, plan: str) -> tuple[str, str, str]:
    async with s.post(url + "/api/admin/users", headers=ADMIN,
                      json={"email": "ann@example.com", "plan": plan, "password": PASSWORD}) as r:
        assert r.status == 201, await r.text()
        uid = (await r.json())["user"]["id"]
    async with s.post(url + "/api/auth/login", json={"email": "ann@example.com", "password": PASSWORD}) as r:
        session = (await r.json())["token"]
    async with s.post(url + "/api/tokens", headers=bearer(session), json={"name": "t"}) as r:
        assert r.status == 201, await r.text()
        return uid, session, (await r.json())["key"]


async def test_fifty_racing_requests_on_two_replicas_against_a_budget_that_fits_ten(tmp_path, fake_openai, postgres_url,
                                                                                     redis_url) -> None:
    async with two(tmp_path, fake_openai, postgres_url, redis_url) as (a, b, s):
        _, _, key = await user_with_token(s, a.url, "capped")
        fake_openai.hold = asyncio.Event()

        async def one(i: int) -> int:
            async with s.post((a.url, b.url)[i % 2] + "/v1/chat/completions", headers=bearer(key), json=BODY) as r:
                await r.read()
                return r.status

        tasks = [asyncio.create_task(one(i)) for i in range(50)]
        try:
            for _ in range(400):
                if sum(t.done() for t in tasks) == 40 and len(fake_openai.requests) == 10:
                    break
                await asyncio.sleep(0.05)
            decided, upstream = sum(t.done() for t in tasks), len(fake_openai.requests)
        finally:
            fake_openai.hold.set()
        codes = await asyncio.gather(*tasks)
        print(f"budget race on two replicas: {codes.count(200)} admitted, {codes.count(429)} refused, "
              f"{upstream} reached the provider")
        assert (decided, upstream) == (40, 10)
        assert codes.count(200) == 10 and codes.count(429) == 40


async def test_suspension_and_logout_reach_the_other_replica_within_a_second(tmp_path, fake_openai, postgres_url,
                                                                             redis_url) -> None:
    async with two(tmp_path, fake_openai, postgres_url, redis_url) as (a, b, s):
        uid, session, key = await user_with_token(s, a.url, "basic")

        async def status(url: str, path: str, token: str) -> int:
            async with s.get(url + path, headers=bearer(token)) as r:
                await r.read()
                return r.status

        async def until(url: str, path: str, token: str, want: int) -> float:
            t0 = time.monotonic()
            while await status(url, path, token) != want:
                assert time.monotonic() - t0 < 5
                await asyncio.sleep(0.01)
            return time.monotonic() - t0

        # Warm both replicas' caches, then suspend on one and watch the other.
        for url in (a.url, b.url):
            assert await status(url, "/v1/models", key) == 200
            assert await status(url, "/api/auth/me", session) == 200
        t0 = time.monotonic()
        async with s.patch(f"{a.url}/api/admin/users/{uid}", headers=ADMIN, json={"state": "suspended"}) as r:
            assert r.status == 200
        patched = time.monotonic() - t0
        token_s = await until(b.url, "/v1/models", key, 403) + patched
        async with s.post(b.url + "/v1/chat/completions", headers=bearer(key), json=BODY) as r:
            assert r.status == 403 and "suspended" in (await r.json())["error"]["message"]

        async with s.patch(f"{a.url}/api/admin/users/{uid}", headers=ADMIN, json={"state": "active"}) as r:
            assert r.status == 200
        await until(b.url, "/v1/models", key, 200)
        async with s.post(a.url + "/api/auth/login", json={"email": "ann@example.com", "password": PASSWORD}) as r:
            session = (await r.json())["token"]
        assert await status(b.url, "/api/auth/me", session) == 200
        t0 = time.monotonic()
        async with s.post(a.url + "/api/auth/logout", headers=bearer(session)) as r:
            assert r.status == 204
        logout_s = await until(b.url, "/api/auth/me", session, 401) + (time.monotonic() - t0) * 0
        print(f"propagation to the other replica: suspension {token_s * 1000:.0f} ms, logout {logout_s * 1000:.0f} ms")
        assert token_s < 1.0 and logout_s < 1.0  # the caches live 0.9 s; the rest is one DB read and the poll


async def test_a_gateway_key_added_on_one_replica_serves_on_the_other_within_seconds(tmp_path, fake_openai, postgres_url,
                                                                                    redis_url) -> None:
    from tests.support.fakes.openai import run_fake_openai

    async with run_fake_openai() as runtime_fake, two(tmp_path, fake_openai, postgres_url, redis_url) as (a, b, s):
        async with s.post(a.url + "/api/admin/keys", headers=ADMIN, json={"name": "c", "tier": "basic"}) as r:
            key = (await r.json())["key"]
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        async with s.post(b.url + "/v1/chat/completions", headers=bearer(key), json=body) as r:
            assert r.status == 200 and r.headers["X-LLM-Key-ID"] != ""
        t0 = time.monotonic()
        async with s.post(a.url + "/api/admin/provider-keys", headers=ADMIN, json={
                "name": "rt", "provider": "openai", "api_key": "sk-runtime-0001", "base_url": runtime_fake.base_url}) as r:
            assert r.status == 201, await r.text()
            kid = (await r.json())["id"]
        while True:
            async with s.post(b.url + "/v1/chat/completions", headers=bearer(key), json=body) as r:
                assert r.status == 200
                if r.headers["X-LLM-Key-ID"] == kid:
                    break
            assert time.monotonic() - t0 < 5
            await asyncio.sleep(0.05)
        added_s = time.monotonic() - t0
        async with s.patch(f"{a.url}/api/admin/provider-keys/{kid}", headers=ADMIN, json={"disabled": True}) as r:
            assert r.status == 200
        t0 = time.monotonic()
        while True:
            async with s.post(b.url + "/v1/chat/completions", headers=bearer(key), json=body) as r:
                if r.headers["X-LLM-Key-ID"] != kid:
                    break
            assert time.monotonic() - t0 < 5
            await asyncio.sleep(0.05)
        print(f"run-time gateway key on the other replica: serving after {added_s * 1000:.0f} ms, "
              f"disabled after {(time.monotonic() - t0) * 1000:.0f} ms")
        assert added_s < 3.0 and time.monotonic() - t0 < 3.0
