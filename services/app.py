"""App: the one context object that owns every long-lived thing, and build_app() to make it.

Nothing lives at module level: the store, limiter, router, ledger, upstream sessions and
metrics hang off an App built from one Config, with the clock and random source injected
so tests (and the test hooks) can control time and chance.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from typing import Any

from services.accounts.signin import SignIn
from services.accounts.alerts import Alerts
from services.accounts.audit import AuditLog
from services.accounts.budgets import Budgets
from services.accounts.statements import Statements
from services.accounts.tokens import Tokens
from services.accounts.users import Accounts
from services.accounts.plans import Plans
from services.auth.admin_key import AdminKeyInfo, load_admin_key
from services.auth.authenticator import Authenticator
from services.auth.credentials import Credentials
from services.auth.key_vault import KeyVault
from services.auth.login_throttle import LoginThrottle
from services.auth.provider_secrets import ProviderSecrets
from services.auth.sealing import Sealer, key_id as seal_key_id
from services.auth.secrets import check_fingerprint, derive, load_or_create_secret, secret_fingerprint
from services.auth.sessions import Sessions
from services.auth.throttle import AuthThrottle
from services.catalog.pricing import Catalog
from services.routing.aliases import RuntimeAliases
from services.routing.routable import ModelCatalog
from services.clock import Clock, SystemClock
from services.config.load import load_config, with_demo
from services.config.schema import Config
from services.core.poller import Changes, Poller
from services.core.scrub import Scrubber
from services.fidelity import Fidelity
from services.limits import make_limiter
from services.limits.quotas import Quotas
from services.limits.open_gate import OpenGate
from services.loading.loader import ModelLoader
from services.loading.registry import LoadedModels
from services.metering.ledger import Ledger, owner_tag
from services.media import Media
from services.metrics import Metrics
from services.pipeline import Pipeline
from services.providers.upstreams import Upstreams
from services.responses.service import Responses
from services.routing.candidates import CandidateIndex
from services.routing.key_gate import KeyGate
from services.routing.passthrough import Passthrough
from services.routing.router import Router
from services.routing.user_keys import UserKeys
from services.store.records import TierRecord
from services.store.store import Store
from tollgate.tracing import make_tracing

log = logging.getLogger("tollgate")


class App:
    def __init__(self, config: Config, clock: Clock, rng: random.Random, tracing: Any = None) -> None:
        config = with_demo(config)
        self.config = config
        # Traces: None unless an OTLP endpoint is configured (or a test hands an exporter in);
        # every seam tests `is not None` first, so with tracing off nothing of it runs.
        self.tracing = tracing if tracing is not None else make_tracing(
            config.otlp_endpoint, "tollgate", config.trace_content, config.trace_sample_ratio)
        self.clock = clock
        self.rng = rng
        os.makedirs(config.data_dir, exist_ok=True)
        secret = load_or_create_secret(config.data_dir, config.secret_key or None)
        self.pepper = derive(secret, "api-key-pepper")
        seal = derive(secret, "provider-key-seal")
        self.sealer = Sealer({seal_key_id(seal): seal}, seal_key_id(seal))
        self.scrubber = known_secrets(config)  # provider_secrets adds the stored provider keys as it opens them
        self.store = Store(config.database_url or None, config.data_dir, clock)
        # auth/ owns every secret the store keeps: API-key hashes, password hashes, sealed provider keys.
        self.key_vault = KeyVault(self.store, self.pepper, clock)
        self.credentials = Credentials(self.store, clock, self.pepper)
        self.provider_secrets = ProviderSecrets(self.store, self.sealer, clock, self.scrubber,
                                                f"TOLLGATE_SECRET_KEY or {config.data_dir}/secret.key")
        self._secret_source = ("TOLLGATE_SECRET_KEY" if config.secret_key
                               else os.path.join(config.data_dir, "secret.key"))
        # Alerts stand on the store alone; built now, they are handed to what raises them (issue 16).
        hook_secret = config.alert_webhook_secret.encode() if config.alert_webhook_secret else derive(secret, "alert-webhooks")
        self.alerts = alerts = Alerts(self.store, clock, config.alert_webhooks, hook_secret, pct=config.budget_alert_pct)
        self.limiter = make_limiter(config.redis_url or None, clock, config.limiter_fail_mode)
        self.quotas = Quotas(self.limiter, {t.name: t for t in config.tiers}, config.quota_timezone)
        self.catalog = Catalog.builtin()
        self.index = CandidateIndex(config, self.catalog)
        self.models = ModelCatalog(self.catalog, self.index)
        # What every replica polls in the store (aliases, loaded models, shared keys, plans) is
        # re-read only when the store's change counter moved, read once a second off the event loop (issue 20.5).
        self.store_changes = Changes(self.store.change_count_blocking, 1.0, log)
        # Run-time aliases over the config's (issue 18 point 6).
        self.aliases = RuntimeAliases(self.store, self.index, self.models, config.model_aliases,
                                      changes=self.store_changes)
        self.upstreams = Upstreams(config.upstream_connections_per_host, tracing=self.tracing)
        self.user_keys = UserKeys(self.store, self.provider_secrets, clock, catalog=self.catalog, quota_tz=config.quota_timezone)
        # One key gate for the router, the pass-through and loaded models' keys.
        self.gate = KeyGate(
            config, self.limiter, clock, self.user_keys,
            on_open=lambda key_id: alerts.emit(
                "breaker_open", key_id, f"provider key {key_id}: circuit opened after repeated failures", None),
            on_disabled=lambda key_id: alerts.emit(
                "provider_key_disabled", key_id,
                f"provider key {key_id} was refused by its provider and is disabled for an hour",
                f"disabled:{key_id}:{int(clock.now() // 3600)}"))
        # Issue 19: models loaded at run time, routed by name before the configured providers.
        self.loaded = LoadedModels(self.store, self.provider_secrets, {p.name: p for p in config.providers}, clock,
                                   set_secret=self.gate.set_secret, changes=self.store_changes)
        # Each worker of a supervisor has its own owner tag: a restarted worker turns only its own
        # earlier life's placeholders into `interrupted`, not those of its live siblings (B7).
        owner = owner_tag(config.data_dir + (f"#worker{config.worker_id}" if config.worker_id else ""))
        self.ledger = Ledger(self.store.insert_usage, flush_s=config.ledger_flush_s, store=self.store, owner=owner,
                             now=clock.now, max_request_s=config.request_timeout_s)
        self.sessions = Sessions(derive(secret, "session"), clock)
        self.auth: Authenticator = Authenticator(config, self.store, self.key_vault, self.pepper, clock, "",
                                                 sessions=self.sessions)
        # Metrics reads these parts' state only when scraped; it is handed to what feeds its counters.
        self.metrics = Metrics(config.providers, self.gate.breaker, self.limiter, self.ledger, self.auth.stats)
        self.router = Router(config, self.index, self.upstreams, self.limiter, clock, rng,
                             on_attempt=self.metrics.on_attempt, user_keys=self.user_keys, scrubber=self.scrubber,
                             gate=self.gate, loaded=self.loaded, tracing=self.tracing)
        # The native pass-through relay: beside the router, on the router's key gate (seed 003).
        self.passthrough = Passthrough(config, self.router.gate, self.upstreams, self.router.record, clock,
                                       scrubber=self.scrubber, tracing=self.tracing)
        self.budgets = Budgets(self.limiter, self.catalog, self.quotas.tiers, config.unpriced_models, config.quota_timezone)
        self.pipeline = Pipeline(self.quotas, self.router, self.ledger, self.catalog, clock, config.request_timeout_s,
                                 budgets=self.budgets, alerts=self.alerts, tracing=self.tracing)
        # The surfaces over the pipeline and the relay: fields relayed as sent, media, the Responses API.
        self.fidelity = Fidelity(self.index, self.pipeline, self.passthrough)
        self.media = Media(self.index, self.pipeline, self.passthrough, self.catalog)
        self.responses = Responses(self.pipeline, self.store, clock, self.index, self.passthrough,
                                   ttl_s=config.responses_ttl_s, max_per_owner=config.responses_max_per_caller)
        self.loader = ModelLoader(config, self.store, self.provider_secrets, self.index, self.upstreams, self.loaded)
        self.open_gate = OpenGate(config, self.limiter)  # seed 004's open mode (off by default)
        self.audit = AuditLog(self.store, clock)
        self.demo_users: list[tuple[str, str, str, str]] = []  # make demo: shown once in the banner
        self.signin = SignIn(self.store, self.sessions, self.auth, clock)
        self.statements = Statements(self.store, self.ledger, lambda: self.quotas.tiers, clock)
        self.tokens = Tokens(self.store, self.key_vault, self.auth, clock, config.default_tier, lambda: self.quotas.tiers)
        self.accounts = Accounts(self.store, self.credentials, self.signin, self.auth, clock, lambda: self.quotas.tiers)
        self.plans = Plans(self.store, self.quotas, self.budgets, clock, config.tiers, config.quota_timezone,
                           changes=self.store_changes)
        self.admin_key = AdminKeyInfo("env")
        # Issue 15 point 5: failed authentications per client address (the open gate's idea of it),
        # counted per deployment: replicas share the server secret, so its fingerprint names them.
        self.auth_throttle = AuthThrottle(self.limiter, clock, secret_fingerprint(self.pepper)[3:19],
                                          self.open_gate.client_ip, limit=config.auth_failures_per_minute,
                                          on_failure=self.metrics.on_auth_failure)
        self.login_throttle = LoginThrottle(self.limiter, self.pepper)  # failed sign-ins per account
        self.ledger.on_row(self.metrics.on_row)
        self.started_at = clock.monotonic()
        self.draining = False
        self._reaper: asyncio.Task | None = None
        # Issue 16: whether any run-time gateway keys exist, re-read every second, so a key an admin
        # adds on another replica serves here within about a second (the request path only looks the
        # keys up, from a one-second cache, when some exist).
        self._shared_watch = Poller("shared-keys-watch", self._read_shared_keys, 1.0, log, at_once=True,
                                    changes=self.store_changes)

    def uptime_s(self) -> float:
        return self.clock.monotonic() - self.started_at

    async def start(self) -> None:
        await self.store.start()
        try:
            await check_fingerprint(self.store, self.pepper, self._secret_source)
            await self.provider_secrets.check_sealed()
        except BaseException:
            await self.store.close()
            raise
        # The config's tiers (defaults plus [[tiers]]) are the ones keys may be created in.
        # A plan an admin edited at run time keeps its stored values (services/accounts/plans.py).
        for t in self.config.tiers:
            await self.store.seed_config_tier(TierRecord(t.name, t.rpm, t.rpd, t.tpd, t.tpm_month, t.description,
                                                         t.price_usd_month, t.budget_usd_day, t.budget_usd_month))
        self.store_changes.start()
        await self.plans.refresh()
        self.plans.start()
        self.admin_key, admin_digest = await load_admin_key(self.store, self.pepper, self.config.admin_key,
                                                            self.scrubber)
        self.auth.use_admin_hash(admin_digest)
        self.ledger.start()
        self.alerts.start()
        if self.config.demo_data:
            from services.accounts.demo import seed_demo_users

            self.demo_users = await seed_demo_users(self.store, self.credentials, self.signin)
        self._shared_watch.start()
        await self.loaded.refresh()
        self.loaded.start()
        await self.aliases.refresh()
        self.aliases.start()
        self._reaper = asyncio.get_running_loop().create_task(self._reap_reservations(), name="limiter-reaper")

    async def _read_shared_keys(self) -> None:
        self.router.shared_keys = any(r.user_id is None for r in await self.store.list_provider_keys(None))

    async def _reap_reservations(self) -> None:
        """Gives back reservations whose request died without settling (RELIABILITY B7)."""
        while True:
            await asyncio.sleep(5.0)
            try:
                await self.limiter.reap()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.debug("limiter reap failed: %s", type(e).__name__)

    def reload_static_keys(self) -> int:
        """Re-reads AUTH_KEY / AUTH_KEY_01..99 from the environment (seed 002's reload)."""
        fresh = load_config(self.config.source if self.config.source not in ("defaults",) else None)
        return self.auth.load_static(fresh.static_keys)

    async def ready(self) -> dict[str, str]:
        """Each dependency's state for /health/ready."""
        state = {"store": "ok" if await self.store.ping(timeout_s=1.0) else "unreachable"}
        if self.config.redis_url:
            await self.limiter.healthy()  # probes a backend marked down (at most once a second)
            up = getattr(self.limiter, "backend_up", True)
            state["limiter"] = "ok" if up else ("degraded" if self.config.limiter_fail_mode == "open" else "unavailable")
        else:
            state["limiter"] = "ok"
        return state

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        await self.alerts.close()
        await self.plans.stop()
        await self._shared_watch.close()
        await self.store_changes.close()
        await self.ledger.close()
        await self.loaded.close()
        await self.aliases.close()
        await self.upstreams.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # flushes the batch; the exporter is blocking I/O
        try:
            await self.limiter.close()
        finally:
            await self.store.close()


def known_secrets(config: Config) -> Scrubber:
    """A Scrubber holding every secret the config names (issue 15 point 3)."""
    s = Scrubber()
    s.set("admin", config.admin_key)
    s.set("server-secret", config.secret_key)
    for k in config.static_keys:
        s.set("static:" + k.id, k.secret)
    for p in config.providers:
        for pk in p.keys:
            s.set("provider:" + pk.id, pk.secret)
    return s


def build_app(config: Config, clock: Clock | None = None, rng: random.Random | None = None, tracing: Any = None) -> App:
    return App(config, clock or SystemClock(), rng or random.Random(), tracing)
