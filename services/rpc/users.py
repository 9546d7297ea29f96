"""UserService: the operator's back office over users (admin only; issue 16). Translation only:
the rules are in services/accounts/users.py."""

from __future__ import annotations

from typing import Any

from services.core.errors import FieldViolation, NotFound
from services.rpc import paging
from services.rpc.interceptors import Ctx, Guard, unary
from services.rpc.keys import _provider_key_fields, client_info, provider_key_pb, session_pb, statement_pb, token_pb, user_pb
from services.routing.user_keys import SHARED
from services.store.records import KIND_TOKEN, STATE_DELETED, STATES, TierRecord
from services.accounts.alerts import Alerts
from services.accounts.audit import AuditLog
from services.accounts.plans import Plans
from services.accounts.signin import SignIn
from services.accounts.statements import Statements
from services.accounts.users import ROLES, Accounts, invalid
from services.config.schema import Config
from services.limits.quotas import Quotas
from services.metering.ledger import Ledger
from services.routing.router import Router
from services.routing.user_keys import UserKeys
from services.auth.provider_secrets import ProviderSecrets
from services.store.store import Store
from tollgate.v1 import key_service_pb2 as kpb
from tollgate.v1 import user_service_pb2 as upb
from tollgate.v1 import user_service_pb2_grpc as upb_grpc

QUERY_MAX = 254


def user_fields(u: Any) -> dict[str, Any]:
    """What the audit log keeps of a user: plain fields, never a secret."""
    return {"email": u.email, "plan": u.tier, "role": u.role, "state": u.state, "budget_usd_day": u.budget_usd_day,
            "budget_usd_month": u.budget_usd_month}


def plan_pb(t: Any, users: int) -> upb.Plan:
    plan = upb.Plan(name=t.name, description=t.description, rpm=t.rpm, rpd=t.rpd, tpd=t.tpd, tpm_month=t.tpm_month,
                    budget_usd_day=t.budget_usd_day, budget_usd_month=t.budget_usd_month, users=users)
    if t.price_usd_month is not None:
        plan.price_usd_month = t.price_usd_month
    return plan


def plan_record(p: upb.Plan) -> TierRecord:
    return TierRecord(p.name, p.rpm, p.rpd, p.tpd, p.tpm_month, p.description,
                      p.price_usd_month if p.HasField("price_usd_month") else None, p.budget_usd_day, p.budget_usd_month)


def plan_fields(t: Any) -> dict[str, Any]:
    """What the audit log keeps of a plan."""
    return {"description": t.description, "rpm": t.rpm, "rpd": t.rpd, "tpd": t.tpd, "tpm_month": t.tpm_month,
            "price_usd_month": t.price_usd_month, "budget_usd_day": t.budget_usd_day,
            "budget_usd_month": t.budget_usd_month}


def gateway_key_pb(r: Any) -> upb.GatewayKey:
    return upb.GatewayKey(id=r.id, name=r.name, provider=r.provider_kind, base_url=r.base_url, mask=r.mask,
                          models=list(r.models), priority=r.priority, disabled=r.disabled, source="store")


class UserServicer(upb_grpc.UserServiceServicer):
    """The operator's back office: users, plans, gateway keys, audit and alerts (admin only)."""

    def __init__(self, guard: Guard, store: Store, provider_secrets: ProviderSecrets, accounts: Accounts, plans: Plans, quotas: Quotas, audit: AuditLog,
                 alerts: Alerts, config: Config, ledger: Ledger, router: Router, signin: SignIn, statements: Statements,
                 user_keys: UserKeys) -> None:
        self.guard = guard
        self.store = store
        self.provider_secrets = provider_secrets  # gateway keys: sealed on add, forgotten on delete
        self.accounts = accounts
        self.plans = plans
        self.quotas = quotas
        self.audit = audit
        self.alerts = alerts
        self.config = config
        self.ledger = ledger
        self.router = router
        self.signin = signin
        self.statements = statements
        self.user_keys = user_keys

    async def _existing(self, user_id: str):
        user = await self.store.get_user(user_id) if user_id and len(user_id) <= 64 else None
        if user is None or user.state == STATE_DELETED:
            raise NotFound("User not found", reason="USER_NOT_FOUND")
        return user

    async def _plan_out(self, name: str) -> upb.Plan:
        n = sum(1 for u in await self.store.list_users() if u.state != STATE_DELETED and u.tier == name)
        return plan_pb(self.quotas.tiers[name], n)

    async def _shared_key(self, key_id: str):
        rec = await self.store.get_provider_key(key_id, None) if key_id and len(key_id) <= 64 else None
        if rec is None:
            # Config keys are not the store's: they cannot be changed here (edit the config).
            raise NotFound("Run-time provider key not found (config keys are read-only)",
                           reason="PROVIDER_KEY_NOT_FOUND")
        return rec

    async def _existing_any(self, user_id: str):
        user = await self.store.get_user(user_id) if user_id and len(user_id) <= 64 else None
        if user is None:
            raise NotFound("User not found", reason="USER_NOT_FOUND")
        return user

    @unary(admin_only=True)
    async def ListUsers(self, request: upb.ListUsersRequest, ctx: Ctx) -> upb.ListUsersResponse:
        problems = []
        if len(request.query) > QUERY_MAX:
            problems.append(FieldViolation("query", f"at most {QUERY_MAX} characters"))
        if request.role and request.role not in ROLES:
            problems.append(FieldViolation("role", "must be admin or user"))
        if request.state and request.state not in STATES:
            problems.append(FieldViolation("state", "must be active, suspended or deleted"))
        if request.plan and request.plan not in self.quotas.tiers:
            problems.append(FieldViolation("plan", "unknown plan"))
        if problems:
            raise invalid(problems)
        offset, limit = paging.window(request.page_size, request.page_token, request.skip, default=50, maximum=500)
        users, total = await self.store.list_users_page(request.query.strip(), request.plan, request.role,
                                                       request.state, limit, offset)
        await self.ledger.flush()
        out = []
        for u in users:
            spend = await self.accounts.spend_month(u.id)
            out.append(upb.UserSummary(user=user_pb(u), tokens=await self.store.count_active_keys(u.id),
                                       spend_month_usd=round(float(spend.get("cost_usd", 0.0)), 6)))
        return upb.ListUsersResponse(users=out, total_size=total,
                                     next_page_token=paging.next_token(offset, limit, total))

    @unary(admin_only=True)
    async def GetUser(self, request: upb.GetUserRequest, ctx: Ctx) -> upb.GetUserResponse:
        user = await self._existing(request.id)
        tokens = await self.store.list_api_keys(user_id=user.id, kind=KIND_TOKEN)
        keys = await self.store.list_provider_keys(user.id)
        await self.ledger.flush()
        t = await self.accounts.spend_month(user.id)
        usage = upb.UserUsage(requests=int(t.get("requests", 0)), prompt_tokens=int(t.get("prompt_tokens", 0)),
                              completion_tokens=int(t.get("completion_tokens", 0)),
                              cost_usd=round(float(t.get("cost_usd", 0.0)), 6))
        return upb.GetUserResponse(user=user_pb(user), tokens=[token_pb(x) for x in tokens],
                                   provider_keys=[provider_key_pb(k) for k in keys if k.user_id == user.id],
                                   usage=usage, sessions=await self.store.count_sessions(user.id))

    @unary(admin_only=True)
    async def CreateUser(self, request: upb.CreateUserRequest, ctx: Ctx) -> upb.CreateUserResponse:
        created = await self.accounts.create(request.email, request.plan, request.role, request.password)
        await self.audit.record(ctx.principal, "user.create", created.user.id, client_info(ctx)[1],
                               None, {**user_fields(created.user), "invited": bool(created.invite_token)})
        return upb.CreateUserResponse(user=user_pb(created.user), invite_token=created.invite_token)

    @unary(admin_only=True)
    async def UpdateUser(self, request: upb.UpdateUserRequest, ctx: Ctx) -> upb.UpdateUserResponse:
        await self._existing(request.id)
        before, after = await self.accounts.update(
            request.id, plan=request.plan, role=request.role, state=request.state,
            budget_usd_day=request.budget_usd_day if request.HasField("budget_usd_day") else None,
            budget_usd_month=request.budget_usd_month if request.HasField("budget_usd_month") else None)
        if before is not after:
            await self.audit.record(ctx.principal, "user.update", request.id, client_info(ctx)[1],
                                   user_fields(before), user_fields(after))
        return upb.UpdateUserResponse(user=user_pb(after))

    @unary(admin_only=True)
    async def DeleteUser(self, request: upb.DeleteUserRequest, ctx: Ctx) -> upb.DeleteUserResponse:
        await self._existing(request.id)
        before = await self.accounts.delete(request.id)
        await self.audit.record(ctx.principal, "user.delete", request.id, client_info(ctx)[1], user_fields(before),
                               {**user_fields(before), "state": STATE_DELETED})
        return upb.DeleteUserResponse()

    @unary(admin_only=True)
    async def ListUserSessions(self, request: upb.ListUserSessionsRequest, ctx: Ctx) -> upb.ListUserSessionsResponse:
        user = await self._existing(request.id)
        rows = await self.signin.list(user.id)
        return upb.ListUserSessionsResponse(sessions=[session_pb(r, ctx.principal.session_id) for r in rows])

    @unary(admin_only=True)
    async def RevokeUserSessions(self, request: upb.RevokeUserSessionsRequest,
                                 ctx: Ctx) -> upb.RevokeUserSessionsResponse:
        user = await self._existing(request.id)
        n = await self.signin.end_all(user.id)
        await self.audit.record(ctx.principal, "user.sessions.revoke", user.id, client_info(ctx)[1], None,
                               {"revoked": n})
        return upb.RevokeUserSessionsResponse(revoked=n)

    @unary(admin_only=True)
    async def ListPlans(self, request: upb.ListPlansRequest, ctx: Ctx) -> upb.ListPlansResponse:
        counts: dict[str, int] = {}
        for u in await self.store.list_users():
            if u.state != STATE_DELETED:
                counts[u.tier] = counts.get(u.tier, 0) + 1
        return upb.ListPlansResponse(plans=[plan_pb(t, counts.get(t.name, 0)) for t in self.quotas.tiers.values()])

    @unary(admin_only=True)
    async def CreatePlan(self, request: upb.CreatePlanRequest, ctx: Ctx) -> upb.CreatePlanResponse:
        rec = await self.plans.create(plan_record(request.plan))
        await self.audit.record(ctx.principal, "plan.create", rec.name, client_info(ctx)[1], None, plan_fields(rec))
        return upb.CreatePlanResponse(plan=await self._plan_out(rec.name))

    @unary(admin_only=True)
    async def UpdatePlan(self, request: upb.UpdatePlanRequest, ctx: Ctx) -> upb.UpdatePlanResponse:
        before, rec = await self.plans.update(plan_record(request.plan))
        await self.audit.record(ctx.principal, "plan.update", rec.name, client_info(ctx)[1], plan_fields(before),
                               plan_fields(rec))
        return upb.UpdatePlanResponse(plan=await self._plan_out(rec.name))

    @unary(admin_only=True)
    async def DeletePlan(self, request: upb.DeletePlanRequest, ctx: Ctx) -> upb.DeletePlanResponse:
        before = await self.plans.delete(request.name)
        await self.audit.record(ctx.principal, "plan.delete", request.name, client_info(ctx)[1],
                               plan_fields(before), None)
        return upb.DeletePlanResponse()

    @unary(admin_only=True)
    async def ListStatements(self, request: upb.ListStatementsRequest, ctx: Ctx) -> upb.ListStatementsResponse:
        users = [await self._existing_any(request.user)] if request.user else await self.store.list_users()
        out = []
        for u in users:
            st = await self.statements.for_user(u, request.month)
            if request.user or st.total.requests or st.plan_price_usd:
                out.append(statement_pb(st))
        return upb.ListStatementsResponse(statements=out)

    @unary(admin_only=True)
    async def ListAudit(self, request: upb.ListAuditRequest, ctx: Ctx) -> upb.ListAuditResponse:
        if request.since < 0 or request.until < 0 or len(request.actor) > 100 or len(request.action) > 100:
            raise invalid([FieldViolation("since", "since/until must be >= 0; actor/action at most 100 characters")])
        offset, limit = paging.window(request.page_size, request.page_token, request.skip, default=50, maximum=500)
        rows, total = await self.store.list_audit(request.actor, request.action, request.since, request.until,
                                                 limit, offset)
        return upb.ListAuditResponse(
            entries=[upb.AuditEntry(id=r.id, actor=r.actor, action=r.action, target=r.target, ip=r.ip,
                                    created_at=r.created_at, before=r.before, after=r.after) for r in rows],
            total_size=total, next_page_token=paging.next_token(offset, limit, total))

    @unary(admin_only=True)
    async def ListAlerts(self, request: upb.ListAlertsRequest, ctx: Ctx) -> upb.ListAlertsResponse:
        offset, limit = paging.window(request.page_size, request.page_token, request.skip, default=50, maximum=500)
        rows, total = await self.store.list_alerts(limit, offset)
        return upb.ListAlertsResponse(
            alerts=[upb.AlertEntry(id=r.id, kind=r.kind, subject=r.subject, message=r.message,
                                   created_at=r.created_at, delivered=r.delivered) for r in rows],
            total_size=total, next_page_token=paging.next_token(offset, limit, total))

    @unary(admin_only=True)
    async def ListGatewayKeys(self, request: upb.ListGatewayKeysRequest, ctx: Ctx) -> upb.ListGatewayKeysResponse:
        out = [upb.GatewayKey(id=k.id, name=p.name, provider=p.kind, base_url=p.base_url, mask="(config)",
                              models=list(p.models), priority=p.priority, source="config")
               for p in self.config.providers for k in p.keys]
        out += [gateway_key_pb(r) for r in await self.store.list_provider_keys(None) if r.user_id is None]
        return upb.ListGatewayKeysResponse(keys=out)

    @unary(admin_only=True)
    async def CreateGatewayKey(self, request: upb.CreateGatewayKeyRequest, ctx: Ctx) -> upb.CreateGatewayKeyResponse:
        fields = await _provider_key_fields(kpb.CreateProviderKeyRequest(
            provider=request.provider, name=request.name, key=request.api_key, base_url=request.base_url,
            models=list(request.models), default_model=request.default_model, priority=request.priority),
            trusted=True)  # the operator's own key, like the config's: any address it names
        rec = await self.provider_secrets.add(user_id=None, **fields)
        self.user_keys.forget(SHARED)
        self.router.shared_keys = True  # here at once; other replicas within their watch period
        await self.audit.record(ctx.principal, "provider_key.create", rec.id, client_info(ctx)[1], None,
                               {"name": rec.name, "provider": rec.provider_kind, "base_url": rec.base_url,
                                "mask": rec.mask, "models": rec.models, "priority": rec.priority})
        return upb.CreateGatewayKeyResponse(key=gateway_key_pb(rec))

    @unary(admin_only=True)
    async def UpdateGatewayKey(self, request: upb.UpdateGatewayKeyRequest, ctx: Ctx) -> upb.UpdateGatewayKeyResponse:
        rec = await self._shared_key(request.id)
        if request.HasField("disabled") and request.disabled != rec.disabled:
            await self.store.set_provider_key_disabled(rec.id, request.disabled)
            self.user_keys.forget(SHARED)
            await self.audit.record(ctx.principal, "provider_key.update", rec.id, client_info(ctx)[1],
                                   {"disabled": rec.disabled}, {"disabled": request.disabled})
            if request.disabled:
                self.alerts.emit("provider_key_disabled", rec.id, f"provider key {rec.name} ({rec.id}) disabled by an admin")
            rec.disabled = request.disabled
        return upb.UpdateGatewayKeyResponse(key=gateway_key_pb(rec))

    @unary(admin_only=True)
    async def DeleteGatewayKey(self, request: upb.DeleteGatewayKeyRequest, ctx: Ctx) -> upb.DeleteGatewayKeyResponse:
        rec = await self._shared_key(request.id)
        await self.provider_secrets.delete(rec.id, None)
        self.user_keys.forget(SHARED, rec.id)
        await self.audit.record(ctx.principal, "provider_key.delete", rec.id, client_info(ctx)[1],
                               {"name": rec.name, "provider": rec.provider_kind, "mask": rec.mask}, None)
        return upb.DeleteGatewayKeyResponse()
