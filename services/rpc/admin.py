"""AdminService: API keys, tiers, stats, the ledger, router and auth status (admin key only)."""

from __future__ import annotations

from typing import Any, Callable

from services.accounts.audit import AuditLog
from services.auth.authenticator import Authenticator
from services.config.schema import Config
from services.core.errors import FieldViolation, InvalidArgument, NotFound, PermissionDenied
from services.limits.base import Limiter
from services.limits.quotas import Quotas
from services.metering.ledger import Ledger
from services.routing.aliases import RuntimeAliases
from services.routing.router import Router
from services.rpc import paging
from services.rpc.interceptors import Ctx, Guard, unary
from services.rpc.usage import usage_row
from services.store.records import ApiKeyRecord, UsageFilter
from services.auth.key_vault import KeyVault
from services.store.store import Store
from tollgate.v1 import admin_service_pb2 as apb
from tollgate.v1 import admin_service_pb2_grpc as apb_grpc

EMAIL_MAX = 320


def api_key_pb(r: ApiKeyRecord) -> apb.ApiKey:
    return apb.ApiKey(id=r.id, prefix=r.prefix, name=r.name, email=r.email, tier=r.tier, created=int(r.created_at),
                      revoked_at=int(r.revoked_at or 0), user=r.user_id or "", last_used_at=int(r.last_used_at or 0))


class AdminServicer(apb_grpc.AdminServiceServicer):
    """API keys, tiers, stats, the ledger, router and auth status (admin key only)."""

    def __init__(self, guard: Guard, config: Config, store: Store, key_vault: KeyVault, quotas: Quotas, ledger: Ledger, auth: Authenticator,
                 audit: AuditLog, router: Router, limiter: Limiter, uptime_s: Callable[[], float],
                 reload_static_keys: Callable[[], int], aliases: RuntimeAliases) -> None:
        self.guard = guard
        self.config = config
        self.store = store
        self.key_vault = key_vault  # issues the admin's API keys (the store keeps their hashes)
        self.quotas = quotas
        self.ledger = ledger
        self.auth = auth
        self.audit = audit
        self.router = router
        self.limiter = limiter
        self.uptime_s = uptime_s
        self.reload_static_keys = reload_static_keys
        self.aliases = aliases  # run-time model aliases (issue 18 point 6)

    @unary(admin_only=True)
    async def CreateApiKey(self, request: apb.CreateApiKeyRequest, ctx: Ctx) -> apb.CreateApiKeyResponse:
        name = request.name.strip()
        tier = request.tier or self.config.default_tier
        problems = []
        if not name or len(name) > 200:
            problems.append(FieldViolation("name", "required, at most 200 characters"))
        if len(request.email) > EMAIL_MAX or (request.email and "@" not in request.email):
            problems.append(FieldViolation("email", "must be an email address"))
        if tier not in self.quotas.tiers:
            problems.append(FieldViolation("tier", f"unknown tier; one of {', '.join(self.quotas.tiers)}"))
        if problems:
            raise InvalidArgument("; ".join(f"{p.field}: {p.description}" for p in problems),
                                  reason="VALIDATION_ERROR", field_violations=problems)
        rec, key = await self.key_vault.create(name=name, email=request.email, tier=tier)
        await self.audit.record(ctx.principal, "api_key.create", rec.id, _ip(ctx), None,
                               {"name": rec.name, "email": rec.email, "tier": rec.tier, "prefix": rec.prefix})
        return apb.CreateApiKeyResponse(api_key=api_key_pb(rec), key=key)

    @unary(admin_only=True)
    async def ListApiKeys(self, request: apb.ListApiKeysRequest, ctx: Ctx) -> apb.ListApiKeysResponse:
        keys = await self.store.list_api_keys(include_revoked=request.include_revoked)
        return apb.ListApiKeysResponse(api_keys=[api_key_pb(k) for k in keys])

    @unary(admin_only=True)
    async def RevokeApiKey(self, request: apb.RevokeApiKeyRequest, ctx: Ctx) -> apb.RevokeApiKeyResponse:
        if not await self.store.revoke_api_key(request.id):
            raise NotFound("API key not found", reason="API_KEY_NOT_FOUND", metadata={"key_id": request.id})
        self.auth.forget()
        await self.audit.record(ctx.principal, "api_key.revoke", request.id, _ip(ctx), {"active": True},
                               {"active": False})
        return apb.RevokeApiKeyResponse()

    @unary(admin_only=True)
    async def ListTiers(self, request: apb.ListTiersRequest, ctx: Ctx) -> apb.ListTiersResponse:
        return apb.ListTiersResponse(tiers=[
            apb.Tier(name=t.name, requests_per_minute=t.rpm, requests_per_day=t.rpd, tokens_per_day=t.tpd,
                     tokens_per_month=t.tpm_month, description=t.description) for t in self.quotas.tiers.values()])

    @unary(admin_only=True)
    async def GetStats(self, request: apb.GetStatsRequest, ctx: Ctx) -> apb.GetStatsResponse:
        await self.ledger.flush()
        totals = await self.store.usage_totals(UsageFilter(since=request.since or None))
        keys = await self.store.list_api_keys()
        by_model = [apb.CountByName(name=m, requests=v["requests"], tokens=v["prompt_tokens"] + v["completion_tokens"],
                                    cost_usd=v["cost_usd"]) for m, v in sorted(totals.get("by_model", {}).items())]
        by_status = [apb.CountByName(name=s, requests=n) for s, n in sorted(totals.get("by_status", {}).items())]
        return apb.GetStatsResponse(
            total_requests=totals.get("requests", 0), prompt_tokens=totals.get("prompt_tokens", 0),
            completion_tokens=totals.get("completion_tokens", 0), cost_usd=totals.get("cost_usd", 0.0),
            active_keys=len(keys), by_model=by_model, by_status=by_status, uptime_s=self.uptime_s())

    @unary(admin_only=True)
    async def ListUsage(self, request: apb.ListUsageRequest, ctx: Ctx) -> apb.ListUsageResponse:
        return await list_usage(self.ledger, self.store, request, UsageFilter(
            key_id=request.key_id or None, user_id=request.user or None, model=request.model or None,
            since=request.since or None, until=request.until or None, status=request.status or None),
            apb.ListUsageResponse)

    # Seed 002 serves /router/* to any authenticated caller: ids and states only, never a key.
    @unary()
    async def GetRouterStatus(self, request: apb.GetRouterStatusRequest, ctx: Ctx) -> apb.GetRouterStatusResponse:
        return await router_status(self.router, self.config, self.limiter)

    @unary()
    async def GetAuthStatus(self, request: apb.GetAuthStatusRequest, ctx: Ctx) -> apb.GetAuthStatusResponse:
        a = self.auth
        keys = await self.store.list_api_keys()
        return apb.GetAuthStatusResponse(
            enabled=a.enabled, static_keys=a.static_count, api_keys=len(keys), failures=a.stats.failures,
            successes=a.stats.successes,
            keys=[apb.AuthKeyMetrics(key_id=k, successes=int(v[0]), last_used_at=v[1]) for k, v in a.stats.per_static.items()])

    @unary()
    async def ReloadAuthKeys(self, request: apb.ReloadAuthKeysRequest, ctx: Ctx) -> apb.ReloadAuthKeysResponse:
        if not (ctx.principal.is_admin or ctx.principal.kind == "static"):
            raise PermissionDenied("reloading keys needs the admin key or a static AUTH_KEY", reason="ADMIN_ONLY")
        n = self.reload_static_keys()
        self.auth.forget()
        keys = await self.store.list_api_keys()
        return apb.ReloadAuthKeysResponse(static_keys=n, api_keys=len(keys))

    @unary(admin_only=True)
    async def SetRegistration(self, request: apb.SetRegistrationRequest, ctx: Ctx) -> apb.SetRegistrationResponse:
        before = await self.store.registration_open()
        await self.store.set_registration_open(request.open)
        await self.audit.record(ctx.principal, "registration.set", "registration", _ip(ctx), {"open": before},
                               {"open": request.open})
        return apb.SetRegistrationResponse(open=request.open)

    @unary(admin_only=True)
    async def SetModelAlias(self, request: apb.SetModelAliasRequest, ctx: Ctx) -> apb.SetModelAliasResponse:
        before = self.aliases.runtime.get(request.name.strip())
        name, models = await self.aliases.set(request.name, list(request.models))
        await self.audit.record(ctx.principal, "model_alias.set", name, _ip(ctx),
                                {"models": list(before)} if before else None, {"models": list(models)})
        return apb.SetModelAliasResponse(alias=apb.ModelAlias(name=name, models=models, source="runtime"))

    @unary(admin_only=True)
    async def DeleteModelAlias(self, request: apb.DeleteModelAliasRequest, ctx: Ctx) -> apb.DeleteModelAliasResponse:
        name = request.name.strip()
        models = await self.aliases.delete(name)
        await self.audit.record(ctx.principal, "model_alias.delete", name, _ip(ctx), {"models": list(models)}, None)
        return apb.DeleteModelAliasResponse(alias=apb.ModelAlias(name=name, models=models, source="runtime"))

    @unary(admin_only=True)
    async def ListModelAliases(self, request: apb.ListModelAliasesRequest, ctx: Ctx) -> apb.ListModelAliasesResponse:
        await self.aliases.refresh()
        return apb.ListModelAliasesResponse(aliases=[apb.ModelAlias(name=n, models=m, source=s)
                                                     for n, m, s in self.aliases.all()])


def _ip(ctx: Ctx) -> str:
    md = {k: v for k, v in ctx.context.invocation_metadata() if isinstance(v, str)}
    if md.get("x-tollgate-client-ip"):
        return md["x-tollgate-client-ip"]
    try:
        return ctx.context.peer() or ""
    except Exception:
        return ""


async def list_usage(ledger: Ledger, store: Store, request: Any, flt: UsageFilter, response_type: Any) -> Any:
    offset, limit = paging.window(request.page_size, request.page_token, request.skip, default=100, maximum=1000)
    await ledger.flush()  # a caller looking for its row just after the response must find it
    rows = await store.list_usage(flt, limit=limit, offset=offset)
    total = await store.count_usage(flt)
    return response_type(rows=[usage_row(r) for r in rows], total_size=total,
                         next_page_token=paging.next_token(offset, limit, total))


async def router_status(router: Router, config: Config, limiter: Limiter) -> apb.GetRouterStatusResponse:
    r = router
    keys = []
    for p in config.providers:
        for k in p.keys:
            rules = r.key_rules(k.id)
            used = {}
            if rules:
                try:
                    d = await limiter.peek("pk:" + k.id, rules)
                    used[d.rule] = d.used
                except Exception:
                    pass
            breaker = r.breaker.state(k.id)
            cooldown = r.cooldowns.remaining(k.id)
            keys.append(apb.KeyStatus(
                provider=p.name, key_id=k.id, kind=p.kind, priority=p.priority, models=list(p.models), breaker=breaker,
                cooldown_s=cooldown, rpm_limit=p.rpm, daily_limit=p.daily_quota,
                rpm_used=used.get("key_rpm", 0), daily_used=used.get("key_daily", 0),
                latency_ms=r.latency.get(k.id) or 0.0, requests=r.stats.per_key_requests.get(k.id, 0),
                failures=r.stats.per_key_failures.get(k.id, 0), available=breaker != "open" and cooldown <= 0))
    return apb.GetRouterStatusResponse(strategy=r.default_strategy, keys=keys, total_requests=r.stats.requests,
                                       failovers=r.stats.failovers, unroutable=r.stats.unroutable)
