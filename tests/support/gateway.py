"""Runs a whole gateway (App + gRPC server + bridge) in the test's event loop on ports 0."""

from __future__ import annotations

import dataclasses
from http.cookiejar import CookieJar, DefaultCookiePolicy
from contextlib import asynccontextmanager
from typing import AsyncIterator

import httpx

from services.config.defaults import DEFAULT_TIERS
from services.config.schema import Config, ProviderConfig, ProviderKeyConfig
from services.runtime import Runtime

ADMIN_KEY = "adm-test-0123456789abcdef"


def provider(name: str, base_url: str, kind: str = "openai", keys: tuple[str, ...] = ("sk-test-upstream",),
             **kw) -> ProviderConfig:
    return ProviderConfig(name=name, kind=kind, base_url=base_url,
                          keys=tuple(ProviderKeyConfig(id=f"{name}-k{i + 1}", secret=s) for i, s in enumerate(keys)), **kw)


def config(tmp_path, providers: tuple[ProviderConfig, ...] = (), **kw) -> Config:
    base = Config(grpc_addr="127.0.0.1:0", http_addr="127.0.0.1:0", data_dir=str(tmp_path / "data"),
                  admin_key=ADMIN_KEY, providers=providers, tiers=DEFAULT_TIERS, shutdown_grace_s=5.0,
                  ledger_flush_s=0.05)
    return dataclasses.replace(base, **kw)


@dataclasses.dataclass
class Gateway:
    rt: Runtime
    http: httpx.AsyncClient

    @property
    def url(self) -> str:
        return self.rt.http_url

    @property
    def app(self):
        return self.rt.app

    async def new_key(self, tier: str = "enterprise", name: str = "test") -> str:
        r = await self.http.post("/api/admin/keys", headers={"X-Admin-Key": ADMIN_KEY},
                                 json={"name": name, "email": "t@example.com", "tier": tier})
        assert r.status_code == 201, r.text
        return r.json()["key"]

    async def ledger(self) -> list:
        from services.store.records import UsageFilter

        await self.app.ledger.flush()
        return await self.app.store.list_usage(UsageFilter(), limit=1000)


@asynccontextmanager
async def run_gateway(cfg: Config, router_retry_jitter: tuple[float, float] = (0.0, 0.0)) -> AsyncIterator[Gateway]:
    rt = Runtime(cfg)
    rt.app.router.retry_jitter_s = router_retry_jitter
    await rt.start()
    # A non-browser client: it keeps no cookies, so a sign-in's session cookie (issue 16) never
    # turns later "no credentials" requests into cookie-authenticated ones.
    no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    async with httpx.AsyncClient(base_url=rt.http_url, timeout=30, cookies=no_cookies) as http:
        try:
            yield Gateway(rt, http)
        finally:
            if rt.app.store._worker is not None:
                await rt.shutdown(grace_s=1.0)
