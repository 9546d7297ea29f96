"""RedisLimiter: the limiter shared by gateway replicas, every decision one atomic Lua script.

Same semantics as memory.py. The scripts live in lua/ (common.lua is prepended to each) and run
by EVALSHA, falling back to EVAL-and-cache on NOSCRIPT (redis-py's register_script), so a
restarted or flushed Redis needs no warm-up.

Two clocks, on purpose:
- sliding windows and reservation leases use Redis's TIME inside the script: one clock for all
  replicas, so skewed gateways still agree (RELIABILITY C2, GitHub's sharded limiter);
- calendar periods ("day", "month" in a time zone) come from the injected clock here and are
  part of the counter's key (`prefix + subject + ":" + rule + ":" + period_id`), expiring at the
  period's end + 1 day, so a new period is a fresh key and "reset" needs no writer (C7). The
  expiry is sent as a TTL from the same clock (EXPIRE, not EXPIREAT): a gateway clock moved by a
  test hook, or skewed against Redis's, can't make a live counter expire at once.

Keys: windows `{prefix}{subject}:{rule}:w` (ZSET), counters as above (string), reservations
`{prefix}rsv:{id}` (hash) indexed by lease end in `{prefix}leases` (ZSET). Reservation records
name the keys they touched, so a reaper in another process can undo them: that needs a single
Redis (or primary + replicas), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from services.clock import Clock, SystemClock
from services.limits.base import Decision, Reservation, Rule, RuleState, decide
from services.limits.lane import Lane
from services.limits.periods import PeriodCache

SCRIPTS = ("hit", "reserve", "settle", "reap", "admit")
REAP_BATCH = 50  # expired reservations reaped per reserve call: bounded work per decision
COUNTER_GRACE_S = 86_400  # counters outlive their period by a day (late settles, status pages)
RECORD_GRACE_S = 86_400  # reservation records outlive their lease so a reaper can still undo them
SOCKET_FLOOR_S = 5.0  # the least any socket or pool wait may take (see connect)
# max_inflight. Over the lane, 32 at a time made a queue: with 1,000 streams open a round trip
# takes a few loop iterations (~80 ms), so 32 in flight admitted ~400 requests/s and cohorts of new
# streams waited up to 850 ms before their admit was sent (bench/README.md, issue 20). The bound
# stays for a pathological burst: 1,024 commands are one write and a few ms of Redis.
LANE_INFLIGHT = 1024
POOL_INFLIGHT = 32  # half of connect()'s 64 connections


def connect(url: str, *, timeout_s: float = 0.25, max_connections: int = 64) -> aioredis.Redis:
    """A client fit for the limiter: a blocking pool (a burst waits for a connection instead of
    failing with "Too many connections"), no command retries (a retried script whose first run
    went through would count twice; degraded.py handles the failure). Socket timeouts are a floor
    against hung sockets, not the request bound: FailoverLimiter bounds each call by `timeout_s`,
    and a short one would fail a cold burst of connects on a busy host (at 1 s, 300 calls opening
    128 connections on a loaded 2-core box did)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=max(SOCKET_FLOOR_S, timeout_s),
        socket_connect_timeout=max(SOCKET_FLOOR_S, timeout_s),
        socket_timeout=max(SOCKET_FLOOR_S, 4 * timeout_s),
        retry=Retry(NoBackoff(), 0),
    )
    return aioredis.Redis.from_pool(pool)


# admit_with_budget's answer: (request decision, token decision, token reservation, budget
# decision, budget reservation); see RedisLimiter.admit_with_budget.
Admitted = tuple[Decision | None, Decision | None, Reservation | None, Decision | None, Reservation | None]


def _unheld(subject: str, rules: tuple[Rule, ...], amount: int, pids: tuple[str, ...],
            free: Decision) -> tuple[Decision | None, Reservation | None]:
    """Rules with no limit among them: allowed, and an id-less reservation (settle does nothing)."""
    return (free, Reservation(subject, rules, amount, pids)) if rules else (None, None)


def _source(name: str) -> str:
    lua = resources.files("services.limits").joinpath("lua")
    return lua.joinpath("common.lua").read_text() + "\n" + lua.joinpath(f"{name}.lua").read_text()


class RedisLimiter:
    """The Limiter over one Redis (see the module docstring).

    `client` is handed in and stays the caller's: close() leaves it open unless `owns_client`
    (make_limiter builds its own client and passes True). `clock` names calendar periods;
    windows and leases use Redis TIME.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str = "tg:",
        lease_s: float = 120.0,
        *,
        clock: Clock | None = None,
        owns_client: bool = False,
        health_timeout_s: float = 0.25,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._lease_us = int(lease_s * 1_000_000)
        self._record_ttl_ms = int((2 * lease_s + RECORD_GRACE_S) * 1000)
        self._clock = clock or SystemClock()
        self._periods = PeriodCache()
        # Reservation and window-member ids: a random prefix per limiter (unique across replicas)
        # and a counter, instead of a uuid4 (an os.urandom call) per decision.
        self._id_prefix = uuid.uuid4().hex[:16] + "-"
        self._ids = itertools.count(1)
        self._owns_client = owns_client
        self._health_timeout_s = health_timeout_s
        self._scripts = {name: client.register_script(_source(name)) for name in SCRIPTS}
        # The scripts of every decision and settle go over one pipelined connection (lane.py,
        # issue 20); redis-py's pool keeps the rest (script loads, reaping, TLS or unix clients).
        self._lane = Lane.for_client(client)
        self._leases = f"{prefix}leases"
        self._loading: dict[str, asyncio.Task] = {}  # SCRIPT LOADs under way, by sha (_load)
        self._settles: list[tuple[Reservation, int, asyncio.Future]] = []
        self._settle_wake = asyncio.Event()
        self._settler: asyncio.Task | None = None

    @property
    def max_inflight(self) -> int:
        """Calls a gateway may have in flight here (quotas.py's gate): the lane pipelines any number
        over one connection; redis-py's pool has `max_connections`, and a call left waiting for one
        would spend its timeout there."""
        return LANE_INFLIGHT if self._lane is not None else POOL_INFLIGHT

    # -- the Limiter protocol -------------------------------------------------------------------

    async def hit(self, subject: str, rules: tuple[Rule, ...]) -> Decision:
        return await self._look(subject, rules, "hit")

    async def peek(self, subject: str, rules: tuple[Rule, ...]) -> Decision:
        return await self._look(subject, rules, "peek")

    async def reserve(self, subject: str, rules: tuple[Rule, ...], amount: int) -> tuple[Decision, Reservation | None]:
        amount = max(0, int(amount))
        now = self._clock.now()
        pids = tuple(self._pid(r, now) for r in rules)
        limited = [(r, p) for r, p in zip(rules, pids) if r.limit > 0]
        if not limited:
            # Nothing to hold: an id-less reservation, whose settle and release do nothing.
            return decide(True, [], now), Reservation(subject, rules, amount, pids)
        rid = self._id_prefix + str(next(self._ids))
        keys, args = self._rule_args(subject, limited, now)
        reply = await self._eval(
            "reserve", [self._leases, self._record(rid), *keys],
            [rid, amount, self._lease_us, self._record_ttl_ms, REAP_BATCH, len(limited), *args],
        )
        decision = self._decision(reply, limited, now)
        if not decision.allowed:
            return decision, None
        return decision, Reservation(subject, rules, amount, pids, id=rid)

    async def admit(self, subject: str, rules: tuple[Rule, ...], token_rules: tuple[Rule, ...],
                    amount: int) -> tuple[Decision | None, Decision | None, Reservation | None]:
        """`hit(rules)` and then, if it admitted, `reserve(token_rules, amount)`, in one script
        (one round trip): (request decision or None without rules, token decision or None when
        refused or without token rules, reservation or None), as MemoryLimiter.admit_now."""
        return (await self.admit_with_budget(subject, rules, token_rules, amount, "", (), 0))[:3]  # type: ignore[return-value]

    async def admit_with_budget(self, subject: str, rules: tuple[Rule, ...], token_rules: tuple[Rule, ...], amount: int,
                                bsubject: str, brules: tuple[Rule, ...], bamount: int) -> Admitted:
        """admit(), then, if the token rules held too, `reserve(brules, bamount)` under `bsubject`
        (a caller's $ budgets, issue 16), all in one script: one round trip with a budget too.
        Adds (budget decision or None when not reached or without budget rules, its reservation
        or None) to admit()'s three, as MemoryLimiter.admit_now."""
        amount, bamount = max(0, int(amount)), max(0, int(bamount))
        now = self._clock.now()
        req = [(r, self._pid(r, now)) for r in rules if r.limit > 0]
        tpids = tuple(self._pid(r, now) for r in token_rules)
        tok = [(r, p) for r, p in zip(token_rules, tpids) if r.limit > 0]
        bpids = tuple(self._pid(r, now) for r in brules)
        bud = [(r, p) for r, p in zip(brules, bpids) if r.limit > 0]
        free = decide(True, [], now)  # no limited rule: allowed, nothing held
        if not req and not tok and not bud:
            return ((free if rules else None), *_unheld(subject, token_rules, amount, tpids, free),
                    *_unheld(bsubject, brules, bamount, bpids, free))
        rid = self._id_prefix + str(next(self._ids))
        bid = rid + "b"
        rkeys, rargs = self._rule_args(subject, req, now)
        tkeys, targs = self._rule_args(subject, tok, now)
        bkeys, bargs = self._rule_args(bsubject, bud, now)
        reply = await self._eval(
            "admit", [self._leases, self._record(rid), self._record(bid), *rkeys, *tkeys, *bkeys],
            [rid, rid, amount, self._lease_us, self._record_ttl_ms, REAP_BATCH, len(req), len(tok), bid, bamount,
             len(bud), *rargs, *targs, *bargs],
        )
        decision = (self._decision(reply[0], req, now) if req else free) if rules else None
        if decision is not None and not decision.allowed:
            return decision, None, None, None, None
        tdec: Decision | None = None
        tres: Reservation | None = None
        if token_rules:
            if not tok:
                tdec, tres = free, Reservation(subject, token_rules, amount, tpids)
            else:
                tdec = self._decision(reply[1], tok, now)
                if not tdec.allowed:
                    return decision, tdec, None, None, None
                tres = Reservation(subject, token_rules, amount, tpids, id=rid)
        if not brules:
            return decision, tdec, tres, None, None
        if not bud:
            return decision, tdec, tres, free, Reservation(bsubject, brules, bamount, bpids)
        bdec = self._decision(reply[2], bud, now)
        if not bdec.allowed:
            return decision, tdec, tres, bdec, None
        return decision, tdec, tres, bdec, Reservation(bsubject, brules, bamount, bpids, id=bid)

    async def settle(self, reservation: Reservation, actual: int) -> None:
        await self._finish(reservation, max(0, int(actual)))

    async def release(self, reservation: Reservation) -> None:
        await self._finish(reservation, 0)

    async def healthy(self) -> bool:
        """A PING answered within health_timeout_s (on the connection decisions use); never raises."""
        try:
            ping = self._lane.call("PING") if self._lane is not None else self._client.ping()
            return bool(await asyncio.wait_for(ping, self._health_timeout_s))
        except (RedisError, OSError, TimeoutError):
            return False

    async def drop_connections(self, in_use: bool = True) -> None:
        """Disconnects the pool's connections (idle ones only unless `in_use`); each reconnects on its
        next use. After an outage the old sockets may still look open and fail once each under the
        next burst (issue 15 point 1), so FailoverLimiter drops them before trusting Redis again.
        The lane is in use whenever anything waits on it: dropped with `in_use` only (a broken one
        drops itself)."""
        if in_use and self._lane is not None:
            self._lane.drop()
        try:
            await self._client.connection_pool.disconnect(inuse_connections=in_use)
        except (RedisError, OSError):
            pass  # a socket that fails to close is gone either way

    async def close(self) -> None:
        """Closes the client only when this limiter owns it; a handed-in client is its owner's to close."""
        if self._settler is not None:
            self._settler.cancel()
            await asyncio.gather(self._settler, return_exceptions=True)
            self._settler = None
        loads, self._loading = list(self._loading.values()), {}
        for task in loads:
            task.cancel()
        await asyncio.gather(*loads, return_exceptions=True)
        if self._lane is not None:
            await self._lane.close()
        if self._owns_client:
            await self._client.aclose()

    # -- extras ---------------------------------------------------------------------------------

    async def reap(self) -> int:
        """Give back reservations past their lease (RELIABILITY B7); reserve() also does this."""
        return int(await self._scripts["reap"](keys=[self._leases], args=[REAP_BATCH, self._record_ttl_ms]))

    # -- internals ------------------------------------------------------------------------------

    async def _look(self, subject: str, rules: tuple[Rule, ...], mode: str) -> Decision:
        now = self._clock.now()
        limited = [(r, self._pid(r, now)) for r in rules if r.limit > 0]
        if not limited:
            return decide(True, [], now)
        keys, args = self._rule_args(subject, limited, now)
        reply = await self._eval("hit", keys, [mode, self._id_prefix + str(next(self._ids)), len(limited), *args])
        return self._decision(reply, limited, now)

    async def _finish(self, reservation: Reservation, actual: int) -> None:
        # At most once: the flag stops this object, the script's record stops every other copy.
        if reservation.settled or not reservation.id:
            reservation.settled = True
            return
        # Settles that come together share one round trip: queued here, sent as one pipeline by
        # the settler task (at c=64 a handful per trip instead of one each).
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._settles.append((reservation, actual, fut))
        self._settle_wake.set()
        if self._settler is None or self._settler.done():
            self._settler = loop.create_task(self._settle_loop(), name="limiter-settler")
        await fut
        reservation.settled = True

    async def _settle_loop(self) -> None:
        """Sends the queued settles, all that waited since the last trip in one pipeline; owned by
        this limiter (close() cancels it). A failed trip fails its callers (degraded.py decides)."""
        while True:
            await self._settle_wake.wait()
            self._settle_wake.clear()
            batch, self._settles = self._settles, []
            batch = [b for b in batch if not b[2].done()]  # a caller that timed out has gone
            if not batch:
                continue
            try:
                await self._settle_batch(batch)
            except asyncio.CancelledError:
                for _, _, fut in batch:
                    if not fut.done():
                        fut.cancel()
                raise
            except Exception as exc:
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)

    async def _settle_batch(self, batch: list[tuple[Reservation, int, asyncio.Future]]) -> None:
        script = self._scripts["settle"]
        if len(batch) == 1:
            replies: list[object] = [None]
            res, actual, _ = batch[0]
            try:
                await self._eval("settle", [self._leases, self._record(res.id)], [actual])
            except Exception as exc:
                replies = [exc]
        elif self._lane is not None:
            futs = await self._lane.send([("EVALSHA", script.sha, 2, self._leases, self._record(res.id), actual)
                                          for res, actual, _ in batch])
            replies = []
            for f in futs:
                try:
                    replies.append(await f)
                except RedisError as exc:
                    replies.append(exc)
        else:
            pipe = self._client.pipeline(transaction=False)
            for res, actual, _ in batch:
                pipe.evalsha(script.sha, 2, self._leases, self._record(res.id), actual)
            replies = await pipe.execute(raise_on_error=False)
        for (res, actual, fut), reply in zip(batch, replies):
            if isinstance(reply, NoScriptError):  # Redis restarted or flushed its scripts: load and go
                try:
                    await self._eval("settle", [self._leases, self._record(res.id)], [actual])
                    reply = None
                except Exception as exc:
                    reply = exc
            if fut.done():
                continue
            if isinstance(reply, BaseException):
                fut.set_exception(reply)
            else:
                fut.set_result(None)

    async def _eval(self, name: str, keys: list[str], args: list[object]) -> Any:
        """Runs one script by EVALSHA (over the lane when there is one), loading it on NOSCRIPT."""
        lane = self._lane
        script = self._scripts[name]
        if lane is None:
            return await script(keys=keys, args=args)
        try:
            return await lane.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted or flushed its scripts: load and go
            await self._load(lane, script.sha, script.script)
            return await lane.call("EVALSHA", script.sha, len(keys), *keys, *args)

    async def _load(self, lane: Lane, sha: str, source: str) -> None:
        """SCRIPT LOAD once for every call that met NOSCRIPT together, over the lane: a burst of 64
        on a fresh Redis made 64 loads, each on a pool connection of its own (64 connections)."""
        loading = self._loading.get(sha)
        if loading is None or loading.done():
            loading = self._loading[sha] = asyncio.get_running_loop().create_task(lane.call("SCRIPT", "LOAD", source))
        await asyncio.shield(loading)  # one caller cancelled (its bound) must not cancel the others' load

    def _pid(self, rule: Rule, now: float) -> str:
        return self._periods.get(rule.period, now, rule.tz)[2] if rule.period else ""

    def _record(self, rid: str) -> str:
        return f"{self._prefix}rsv:{rid}"

    def _rule_args(self, subject: str, limited: list[tuple[Rule, str]], now: float) -> tuple[list[str], list[object]]:
        keys: list[str] = []
        args: list[object] = []
        for rule, pid in limited:
            base = f"{self._prefix}{subject}:{rule.name}"
            if rule.period:
                keys.append(f"{base}:{pid}")
                ttl = int(self._periods.get(rule.period, now, rule.tz)[1] - now) + COUNTER_GRACE_S
                args += ["p", rule.limit, max(1, ttl)]
            else:
                keys.append(f"{base}:w")
                args += ["w", rule.limit, int(rule.window_s * 1_000_000)]
        return keys, args

    def _decision(self, reply: list[int], limited: list[tuple[Rule, str]], now: float) -> Decision:
        allowed, redis_now = bool(reply[0]), int(reply[1])
        states: list[RuleState] = []
        for i, (rule, _) in enumerate(limited):
            used, free_at, ok = int(reply[2 + 3 * i]), int(reply[3 + 3 * i]), bool(reply[4 + 3 * i])
            if rule.period:
                reset_at = self._periods.get(rule.period, now, rule.tz)[1]
            else:
                # Redis time says how long until the slot frees; the local clock says when that is.
                reset_at = now + (free_at - redis_now) / 1e6 if free_at else now
            states.append(RuleState(rule, used, ok, reset_at, 0.0 if ok else max(0.0, reset_at - now)))
        return decide(allowed, states, now)
