"""KeyService: users' sign-up and login, their provider keys, API tokens and usage (issue 7, seed 001).

Register and Login are public; every other RPC needs a user principal (a session token from
Login, or one of the user's API tokens; minting a token needs a session, so a leaked token
cannot outlive its revocation by minting others). Each RPC reads and writes only the caller's
own rows: another user's id answers NOT_FOUND exactly like an id that never existed (F5).
Secrets cross this module only inward (passwords, provider keys) or once outward (a new
token's secret, a session token); messages and metadata never carry one.
"""

from __future__ import annotations

from typing import Any

from services.accounts.budgets import Budgets
from services.accounts.signin import SignIn, Started
from services.accounts.statements import Statements
from services.accounts.tokens import TokenRequest, Tokens
from services.accounts.users import Accounts
from services.providers import ssrf
from services.auth.authenticator import OPERATOR, Authenticator
from services.auth.credentials import PASSWORD_MAX, PASSWORD_MIN, Credentials
from services.auth.login_throttle import LoginThrottle
from services.auth.provider_secrets import ProviderSecrets
from services.clock import Clock
from services.config.schema import Config
from services.core.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from services.limits.base import Limiter
from services.limits.quotas import Quotas
from services.metering.ledger import Ledger
from services.routing.user_keys import UserKeys
from services.config.kinds import KINDS, resolve
from services.rpc.admin import list_usage
from services.rpc.interceptors import Ctx, Guard, unary
from services.store.records import STATE_SUSPENDED, ApiKeyRecord, ProviderKeyRecord, UsageFilter, UserRecord
from services.store.repos.users import normalize_email
from services.store.store import Store
from tollgate.v1 import key_service_pb2 as kpb
from tollgate.v1 import key_service_pb2_grpc as kpb_grpc

EMAIL_MAX = 254
NAME_MAX = 200
SECRET_MAX = 4096
MODEL_MAX = 200
MODELS_MAX = 500
KEYS_PER_USER = 100
BAD_CREDENTIALS = "Invalid email or password"
SUSPENDED = "This account is suspended; contact the operator"
USER_KINDS = ("session", "token")


def user_pb(u: UserRecord) -> kpb.User:
    return kpb.User(id=u.id, email=u.email, role=u.role, tier=u.tier, created=int(u.created_at), state=u.state,
                    budget_usd_day=u.budget_usd_day or 0.0, budget_usd_month=u.budget_usd_month or 0.0)


OPERATOR_USER = kpb.User(id=OPERATOR, email=OPERATOR, role="admin", state="active")


def session_pb(r: Any, current: str) -> kpb.Session:
    return kpb.Session(id=r.id, user_id=r.user_id, created_at=int(r.created_at), last_used_at=int(r.last_used_at or 0),
                       expires_at=int(r.expires_at), user_agent=r.user_agent, ip=r.ip, current=r.id == current)


def bucket_pb(line: Any) -> kpb.UsageBucket:
    return kpb.UsageBucket(name=line.name, requests=line.requests, prompt_tokens=line.prompt_tokens,
                           completion_tokens=line.completion_tokens, cost_usd=line.cost_usd)


def statement_pb(st: Any) -> kpb.Statement:
    t = st.total
    return kpb.Statement(user_id=st.user.id, email=st.user.email, month=st.month, plan=st.user.tier,
                         plan_price_usd=st.plan_price_usd, custom_price=st.custom_price,
                         lines=[bucket_pb(x) for x in st.lines], requests=t.requests, prompt_tokens=t.prompt_tokens,
                         completion_tokens=t.completion_tokens, usage_cost_usd=t.cost_usd, total_usd=st.total_usd,
                         state=st.user.state)


QUOTA_NAMES = {"rpm": ("requests_per_minute", "Requests per minute"), "rpd": ("requests_per_day", "Requests per day"),
               "tpd": ("tokens_per_day", "Tokens per day"), "tpm_month": ("tokens_per_month", "Tokens per month")}


def client_info(ctx: Ctx) -> tuple[str, str]:
    """(user agent, address) of the caller: the bridge's forwarded values, else gRPC's own."""
    md = {k: v for k, v in ctx.context.invocation_metadata() if isinstance(v, str)}
    ua = md.get("x-tollgate-user-agent") or md.get("user-agent", "")
    ip = md.get("x-tollgate-client-ip", "")
    if not ip:
        try:
            ip = ctx.context.peer() or ""
        except Exception:
            ip = ""
    return ua, ip


def session_owner(ctx: Ctx) -> str:
    """Whose sessions the caller manages: its user, or the operator for the admin key."""
    p = ctx.principal
    if p.kind == "admin":
        return OPERATOR
    if p.kind in USER_KINDS and p.user_id:
        return p.user_id
    raise PermissionDenied("Sessions belong to signed-in users; this key has none", reason="USER_REQUIRED")


def provider_key_pb(r: ProviderKeyRecord) -> kpb.ProviderKey:
    return kpb.ProviderKey(id=r.id, provider=r.provider_kind, name=r.name, masked_key=r.mask, base_url=r.base_url,
                           models=list(r.models), default_model=r.default_model, priority=r.priority,
                           daily_quota=r.daily_quota, rpm=r.rpm, created=int(r.created_at))


def token_pb(r: ApiKeyRecord) -> kpb.Token:
    return kpb.Token(id=r.id, name=r.name, prefix=r.prefix, created=int(r.created_at),
                     expires_at=int(r.expires_at or 0), last_used_at=int(r.last_used_at or 0), rpm=r.rpm, rpd=r.rpd,
                     tpd=r.tpd, tpm_month=r.tpm_month, budget_usd_day=r.budget_usd_day or 0.0,
                     budget_usd_month=r.budget_usd_month or 0.0)


def require_user(ctx: Ctx) -> str:
    """The caller's user id; PERMISSION_DENIED for the admin key, static and admin-issued keys."""
    p = ctx.principal
    if p.kind not in USER_KINDS or not p.user_id:
        raise PermissionDenied("This call needs a signed-in user: a session token from Login or one of your API tokens",
                               reason="USER_REQUIRED")
    return p.user_id


def _invalid(problems: list[FieldViolation]) -> InvalidArgument:
    return InvalidArgument("; ".join(f"{p.field}: {p.description}" for p in problems), reason="VALIDATION_ERROR",
                           field_violations=problems)


def _clean_text(value: str) -> bool:
    return not any(ord(c) < 32 or ord(c) == 127 for c in value)


def login_response(kind: Any, user: kpb.User, st: Started) -> Any:
    return kind(user=user, session_token=st.token, expires_at=int(st.expires_at), csrf_token=st.csrf_token,
                session_id=st.session_id)


class KeyServicer(kpb_grpc.KeyServiceServicer):
    """Accounts of one's own: register, sign in, sessions, tokens, own provider keys, usage."""

    def __init__(self, guard: Guard, config: Config, store: Store, credentials: Credentials, tokens: Tokens,
                 provider_secrets: ProviderSecrets, login_throttle: LoginThrottle, quotas: Quotas, limiter: Limiter,
                 signin: SignIn, auth: Authenticator, accounts: Accounts, statements: Statements, budgets: Budgets,
                 ledger: Ledger, clock: Clock, user_keys: UserKeys | None) -> None:
        self.guard = guard
        self.config = config
        self.store = store
        self.credentials = credentials
        self.tokens = tokens
        self.provider_secrets = provider_secrets
        self.login_throttle = login_throttle
        self.quotas = quotas
        self.limiter = limiter
        self.signin = signin
        self.auth = auth
        self.accounts = accounts
        self.statements = statements
        self.budgets = budgets
        self.ledger = ledger
        self.clock = clock
        self.user_keys = user_keys

    def _forget_user_keys(self, user_id: str, key_id: str | None = None) -> None:
        if self.user_keys is not None:  # routing's cache of users' provider keys
            self.user_keys.forget(user_id, key_id)

    async def _operator_login(self, request: kpb.LoginRequest, ctx: Ctx) -> kpb.LoginResponse:
        async with self.login_throttle.attempt("\x00operator", fail_on_error=True) as attempt:
            attempt.failed = not (len(request.admin_key) <= SECRET_MAX and self.auth.is_admin_key(request.admin_key))
        if attempt.failed:
            raise Unauthenticated("Invalid admin key", reason="INVALID_ADMIN_KEY")
        started = await self.signin.start_operator(*client_info(ctx))
        return login_response(kpb.LoginResponse, OPERATOR_USER, started)

    @unary(public=True, peek_limits=False)
    async def Register(self, request: kpb.RegisterRequest, ctx: Ctx) -> kpb.RegisterResponse:
        tier = self.config.default_tier if self.config.default_tier in self.quotas.tiers else "basic"
        user = await self.credentials.sign_up(request.email, request.password, tier)
        started = await self.signin.start(user.id, user.role, *client_info(ctx))
        return login_response(kpb.RegisterResponse, user_pb(user), started)

    @unary(public=True, peek_limits=False)
    async def Login(self, request: kpb.LoginRequest, ctx: Ctx) -> kpb.LoginResponse:
        if request.admin_key:
            return await self._operator_login(request, ctx)
        email = normalize_email(request.email)
        if not email or not request.password:
            raise _invalid([FieldViolation(f, "required") for f, v in (("email", email), ("password", request.password))
                            if not v])
        user = None
        # A failed check keeps its slot for the window; a success, a cancelled or broken check
        # gives it back. Held before the check, so racing guesses cannot overshoot.
        async with self.login_throttle.attempt(email[:EMAIL_MAX * 2], fail_on_error=False) as attempt:
            if len(request.password) <= PASSWORD_MAX and len(email) <= EMAIL_MAX:
                user = await self.credentials.authenticate(email, request.password, suspended=True)
            attempt.failed = user is None
        if user is None:
            raise Unauthenticated(BAD_CREDENTIALS, reason="INVALID_CREDENTIALS")
        if user.state == STATE_SUSPENDED:
            # Said only after the password checked out: to anyone without it, a suspended
            # account answers exactly like a wrong password or an unknown email.
            raise PermissionDenied(SUSPENDED, reason="ACCOUNT_SUSPENDED")
        started = await self.signin.start(user.id, user.role, *client_info(ctx))
        return login_response(kpb.LoginResponse, user_pb(user), started)

    @unary(peek_limits=False)
    async def Logout(self, request: kpb.LogoutRequest, ctx: Ctx) -> kpb.LogoutResponse:
        if not ctx.principal.session_id:
            raise FailedPrecondition("Only a session can log out; revoke a token with RevokeToken",
                                     reason="SESSION_REQUIRED")
        await self.signin.end(ctx.principal.session_id)
        return kpb.LogoutResponse()

    @unary(peek_limits=False)
    async def GetMe(self, request: kpb.GetMeRequest, ctx: Ctx) -> kpb.GetMeResponse:
        owner = session_owner(ctx)
        if owner == OPERATOR:
            return kpb.GetMeResponse(user=OPERATOR_USER, session_id=ctx.principal.session_id)
        user = await self.store.get_user(owner)
        if user is None:
            raise Unauthenticated("This account no longer exists", reason="ACCOUNT_UNAVAILABLE")
        return kpb.GetMeResponse(user=user_pb(user), session_id=ctx.principal.session_id)

    @unary(peek_limits=False)
    async def ListSessions(self, request: kpb.ListSessionsRequest, ctx: Ctx) -> kpb.ListSessionsResponse:
        rows = await self.signin.list(session_owner(ctx))
        return kpb.ListSessionsResponse(sessions=[session_pb(r, ctx.principal.session_id) for r in rows])

    @unary(peek_limits=False)
    async def RevokeSession(self, request: kpb.RevokeSessionRequest, ctx: Ctx) -> kpb.RevokeSessionResponse:
        owner = session_owner(ctx)
        # Another user's session answers exactly like one that never existed (F5).
        if not request.id or len(request.id) > 64 or not await self.signin.end(request.id, owner):
            raise NotFound("Session not found", reason="SESSION_NOT_FOUND")
        return kpb.RevokeSessionResponse()

    @unary(peek_limits=False)
    async def ChangePassword(self, request: kpb.ChangePasswordRequest, ctx: Ctx) -> kpb.ChangePasswordResponse:
        uid = require_user(ctx)
        if ctx.principal.kind != "session":
            raise PermissionDenied("Changing the password needs a session (log in); a token cannot",
                                   reason="SESSION_REQUIRED")
        if not PASSWORD_MIN <= len(request.new_password) <= PASSWORD_MAX:
            raise _invalid([FieldViolation("new_password", f"must be {PASSWORD_MIN}-{PASSWORD_MAX} characters")])
        async with self.login_throttle.attempt("\x00pw:" + uid, fail_on_error=True) as attempt:
            attempt.failed = not (bool(request.current_password)
                                  and await self.credentials.check_password(uid, request.current_password))
        if attempt.failed:
            raise _invalid([FieldViolation("current_password", "is not this account's password")])
        await self.credentials.set_password(uid, request.new_password)
        await self.signin.end_all(uid, except_id=ctx.principal.session_id)
        return kpb.ChangePasswordResponse()

    @unary(peek_limits=False)
    async def GetQuota(self, request: kpb.GetQuotaRequest, ctx: Ctx) -> kpb.GetQuotaResponse:
        p = ctx.principal
        limits = []
        req, tok = self.quotas.rules_for(p)
        for rule in (*req, *tok):
            if rule.limit <= 0:
                continue
            d = await self.limiter.peek(p.subject, (rule,))
            base = rule.name.rsplit(".", 1)[-1]
            name, label = QUOTA_NAMES.get(base, (base, base))
            if rule.name.startswith("k."):
                name, label = "token_" + name, label + " (this token)"
            used = max(0, d.used)
            limits.append(kpb.QuotaLimit(name=name, label=label, limit=rule.limit, used=used,
                                         remaining=max(0, rule.limit - used), reset_at=int(d.reset_at)))
        for line, d in await self.budgets.spent(p):
            scope = "" if line.scope in ("plan", "user") else "token_"
            used = max(0.0, d.used / 1e6)  # micro-dollars spent or held
            limits.append(kpb.QuotaLimit(name=f"{scope}budget_usd_{line.period}",
                                         label=f"{line.scope.capitalize()} budget per {line.period} (USD)",
                                         limit=line.limit_usd, used=round(used, 6),
                                         remaining=round(max(0.0, line.limit_usd - used), 6), reset_at=int(d.reset_at)))
        return kpb.GetQuotaResponse(plan=p.tier, limits=limits)

    @unary(peek_limits=False)
    async def GetUsageSummary(self, request: kpb.GetUsageSummaryRequest, ctx: Ctx) -> kpb.GetUsageSummaryResponse:
        uid = require_user(ctx)
        since, until, total, by_day, by_model = await self.statements.summary(uid, request.since, request.until)
        return kpb.GetUsageSummaryResponse(since=since, until=until, total=bucket_pb(total),
                                           by_day=[bucket_pb(x) for x in by_day],
                                           by_model=[bucket_pb(x) for x in by_model])

    @unary(peek_limits=False)
    async def GetStatement(self, request: kpb.GetStatementRequest, ctx: Ctx) -> kpb.GetStatementResponse:
        uid = require_user(ctx)
        user = await self.store.get_user(uid)
        if user is None:
            raise Unauthenticated("This account no longer exists", reason="ACCOUNT_UNAVAILABLE")
        return kpb.GetStatementResponse(statement=statement_pb(await self.statements.for_user(user, request.month)))

    @unary(public=True, peek_limits=False)
    async def AcceptInvite(self, request: kpb.AcceptInviteRequest, ctx: Ctx) -> kpb.AcceptInviteResponse:
        user = await self.accounts.accept_invite(request.invite_token, request.password)
        started = await self.signin.start(user.id, user.role, *client_info(ctx))
        return login_response(kpb.AcceptInviteResponse, user_pb(user), started)

    @unary(public=True, peek_limits=False)
    async def GetRegistration(self, request: kpb.GetRegistrationRequest, ctx: Ctx) -> kpb.GetRegistrationResponse:
        return kpb.GetRegistrationResponse(enabled=await self.store.registration_allowed())

    @unary()
    async def ListProviderKeys(self, request: kpb.ListProviderKeysRequest, ctx: Ctx) -> kpb.ListProviderKeysResponse:
        uid = require_user(ctx)
        keys = await self.store.list_provider_keys(uid)
        return kpb.ListProviderKeysResponse(keys=[provider_key_pb(k) for k in keys if k.user_id == uid])

    @unary()
    async def CreateProviderKey(self, request: kpb.CreateProviderKeyRequest, ctx: Ctx) -> kpb.CreateProviderKeyResponse:
        uid = require_user(ctx)
        fields = await _provider_key_fields(request)
        if len(await self.store.list_provider_keys(uid)) >= KEYS_PER_USER:
            raise FailedPrecondition(f"At most {KEYS_PER_USER} provider keys per user; delete one first",
                                     reason="TOO_MANY_PROVIDER_KEYS", metadata={"limit": str(KEYS_PER_USER)})
        rec = await self.provider_secrets.add(user_id=uid, **fields)
        self._forget_user_keys(uid)
        return kpb.CreateProviderKeyResponse(key=provider_key_pb(rec))

    @unary()
    async def DeleteProviderKey(self, request: kpb.DeleteProviderKeyRequest, ctx: Ctx) -> kpb.DeleteProviderKeyResponse:
        uid = require_user(ctx)
        if not request.id or not await self.provider_secrets.delete(request.id, uid):
            raise NotFound("Provider key not found", reason="PROVIDER_KEY_NOT_FOUND")
        self._forget_user_keys(uid, request.id)
        return kpb.DeleteProviderKeyResponse()

    @unary()
    async def ListTokens(self, request: kpb.ListTokensRequest, ctx: Ctx) -> kpb.ListTokensResponse:
        uid = require_user(ctx)
        return kpb.ListTokensResponse(tokens=[token_pb(t) for t in await self.tokens.list(uid)])

    @unary()
    async def CreateToken(self, request: kpb.CreateTokenRequest, ctx: Ctx) -> kpb.CreateTokenResponse:
        uid = require_user(ctx)
        if ctx.principal.kind != "session":
            raise PermissionDenied("Creating an API token needs a session (log in); a token cannot mint tokens",
                                   reason="SESSION_REQUIRED")
        rec, secret = await self.tokens.mint(uid, TokenRequest(
            request.name, request.ttl_seconds, request.rpm, request.rpd, request.tpd, request.tpm_month,
            request.budget_usd_day, request.budget_usd_month))
        return kpb.CreateTokenResponse(token=token_pb(rec), secret=secret)

    @unary()
    async def RevokeToken(self, request: kpb.RevokeTokenRequest, ctx: Ctx) -> kpb.RevokeTokenResponse:
        uid = require_user(ctx)
        # Someone else's token, an admin-issued key, a revoked one: all "not found" (F5).
        if not await self.tokens.revoke(uid, request.id):
            raise NotFound("Token not found", reason="TOKEN_NOT_FOUND")
        return kpb.RevokeTokenResponse()

    @unary()
    async def GetUsage(self, request: kpb.GetUsageRequest, ctx: Ctx) -> kpb.GetUsageResponse:
        uid = require_user(ctx)
        if request.since < 0 or request.until < 0:
            raise _invalid([FieldViolation("since" if request.since < 0 else "until", "must be >= 0 (epoch seconds)")])
        flt = UsageFilter(user_id=uid, model=request.model or None, since=request.since or None,
                          until=request.until or None)
        return await list_usage(self.ledger, self.store, request, flt, kpb.GetUsageResponse)


async def _provider_key_fields(request: kpb.CreateProviderKeyRequest, trusted: bool = False) -> dict[str, Any]:
    """The store's arguments for a valid request; INVALID_ARGUMENT with every problem otherwise."""
    problems: list[FieldViolation] = []
    kind = resolve(request.provider) if request.provider else None
    if kind is None or kind.wire == "demo":
        names = ", ".join(k for k, v in KINDS.items() if v.wire != "demo")
        problems.append(FieldViolation("provider", f"must be one of {names}"))
    name = request.name.strip()
    if len(name) > NAME_MAX or not _clean_text(name):
        problems.append(FieldViolation("name", f"at most {NAME_MAX} characters"))
    secret = request.key.strip()
    if not secret or len(secret) > SECRET_MAX or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in secret):
        problems.append(FieldViolation("key", f"required: the provider's key, 1-{SECRET_MAX} characters, no spaces"))
    models = list(dict.fromkeys(m.strip() for m in request.models))
    if len(models) > MODELS_MAX or any(not m or len(m) > MODEL_MAX or any(c.isspace() for c in m) or not _clean_text(m)
                                       for m in models):
        problems.append(FieldViolation("models", f"at most {MODELS_MAX} model names, each 1-{MODEL_MAX} characters, no spaces"))
    default_model = request.default_model.strip()
    if len(default_model) > MODEL_MAX or any(c.isspace() for c in default_model) or not _clean_text(default_model):
        problems.append(FieldViolation("default_model", f"a model name of at most {MODEL_MAX} characters"))
    elif default_model and models and default_model not in models:
        problems.append(FieldViolation("default_model", "must be one of models"))
    if not -1_000_000 <= request.priority <= 1_000_000:
        problems.append(FieldViolation("priority", "must be between -1000000 and 1000000"))
    for field in ("daily_quota", "rpm"):
        if getattr(request, field) < 0:
            problems.append(FieldViolation(field, "must be >= 0 (0 = unlimited)"))
    base_url = request.base_url.strip()
    if kind is not None and kind.wire != "demo" and trusted:
        if not base_url and not kind.base_url:
            problems.append(FieldViolation("base_url", f"required for provider {kind.name}"))
        elif base_url and not base_url.startswith(("http://", "https://")):
            problems.append(FieldViolation("base_url", "must be an http(s) URL"))
    elif kind is not None and kind.wire != "demo":
        try:
            if base_url:
                # RELIABILITY F8: checked and resolved now; connect-time guard in the upstream's connector.
                base_url = (await ssrf.check_url_resolving(base_url)).url
            elif not kind.base_url:
                problems.append(FieldViolation("base_url", f"required for provider {kind.name}"))
            else:
                ssrf.check_url(kind.base_url)  # the kind's own default (Ollama's is localhost)
        except ssrf.UnsafeUrl as e:
            problems.append(FieldViolation("base_url", e.message if base_url else
                                           f"required for provider {kind.name}: its default address is not public"))
    if problems:
        raise _invalid(problems)
    return dict(provider_kind=kind.name, name=name or kind.name, base_url=base_url, secret=secret, models=models,
                default_model=default_model, priority=request.priority, daily_quota=request.daily_quota,
                rpm=request.rpm)
