"""quota -> route -> call -> meter: the one place that sequences a request.

Each entry point admits the request against the caller's tier (one charge, however many
upstream tries follow), lets the router find an upstream, and in `finally` writes exactly
one ledger row and settles or refunds the token reservation — on success, on a declared
error, on a broken stream and on cancellation alike (RELIABILITY D1, D2). A request is also
opened in the ledger when it starts, so one killed with its process still ends as one row,
`interrupted` (B7). An error raised after admission carries the X-RateLimit-* numbers in its
ErrorInfo metadata (`ratelimit_*`), as a success carries them in its response metadata.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable

from services.accounts.alerts import Alerts
from services.accounts.budgets import BudgetPlan, Budgets
from services.core.principal import Principal
from services.catalog.pricing import Catalog
from services.clock import Clock
from services.core import errors as E
from services.core import spans
from services.core.types import ChatRequest, ChatResult, Chunk, EmbedRequest, EmbedResult, Usage
from services.limits.base import Decision, Reservation
from services.limits.quotas import Admission, Quotas, limit_metadata
from services.metering.ledger import Ledger
from services.metering.tokens import SINGLE_TOKEN_MAX_CHARS, estimate_delta, estimate_prompt, estimate_text
from services.routing.passthrough import Exchange, NativeRequest, Passthrough
from services.routing.route_log import RouteLog
from services.routing.router import Router
from services.store.records import UsageRecord

log = logging.getLogger("tollgate.pipeline")


def new_request_id() -> str:
    return "req_" + os.urandom(10).hex()


# A gRPC caller's deadline travels as a relative grpc-timeout, so the server's deadline starts
# when the request arrives, after the client's: the client's own deadline cancels the call a
# transport delay (milliseconds, more on a loaded machine) before ours passes. A cancellation that
# close to the deadline is the deadline's, not the caller's choice.
DEADLINE_SLACK_S = 0.1


# Ledger rows are built positionally: once or twice per request, sixteen keywords cost three
# times the call. This pins the field order those calls assume (records.py is elsewhere).
_ROW_FIELDS = ("request_id", "key_id", "user_id", "surface", "provider", "provider_key_id", "model", "status",
               "prompt_tokens", "completion_tokens", "estimated", "cost_usd", "latency_ms", "attempts", "created_at",
               "error")
if tuple(f.name for f in dataclasses.fields(UsageRecord)) != _ROW_FIELDS:
    raise ImportError("UsageRecord's fields changed: update the positional rows in services/pipeline.py")


@dataclass(slots=True)
class Outcome:
    """What the servicer needs besides the answer: ids, route, limits, final usage."""

    request_id: str
    route: RouteLog
    decision: Decision | None = None
    usage: Usage | None = None
    cost_usd: float = 0.0
    finish_reason: str = ""
    created: float = 0.0
    # The pipeline's bookkeeping for the request (on this one object, not a second per request).
    status: str = "error"  # the ledger row's status, until the request says otherwise
    error: str = ""
    admission: Admission | None = None
    started: float = 0.0  # clock.monotonic() at the start, for the row's latency
    deadline: float = 0.0  # on clock.monotonic()
    task: asyncio.Task | None = None
    span: Any = None  # the request's span, only when tracing is on (services/core/spans.py)


@dataclass(slots=True)
class StreamStarted:
    outcome: Outcome


@dataclass(slots=True)
class StreamFinished:
    outcome: Outcome


@dataclass(slots=True)
class ForwardStarted:
    """A pass-through's upstream answered: its status and headers are in `exchange`."""

    outcome: Outcome
    exchange: Exchange


class Pipeline:
    def __init__(self, quotas: Quotas, router: Router, ledger: Ledger, catalog: Catalog, clock: Clock,
                 request_timeout_s: float, budgets: Budgets | None = None, alerts: Alerts | None = None,
                 tracing: Any = None) -> None:
        self.quotas = quotas
        self.router = router
        self.ledger = ledger
        self.catalog = catalog
        self.clock = clock
        self.request_timeout_s = request_timeout_s
        self.budgets = budgets  # issue 16: spending limits in dollars, for callers who have some
        self.alerts = alerts  # issue 16: budget alerts
        self.shutting_down = False
        self.tracing: Any = tracing  # tollgate.tracing.Tracing when traces are on; None: no span is made
        if ledger.has_history:
            quotas.use_history(ledger, clock.now)  # RELIABILITY C5: lost counters come back from the ledger
            if budgets is not None:
                budgets.use_history(ledger, clock.now)  # and the $ budgets' from its costs
        self._active: set[asyncio.Task] = set()
        self._settling: set[asyncio.Task] = set()  # shared-limiter settles still under way (_finish)
        self._idle = asyncio.Event()
        self._idle.set()

    def _enter(self) -> asyncio.Task | None:
        task = asyncio.current_task()
        if task is not None:
            if not self._active:
                self._idle.clear()  # set exactly while nothing is active: only the first clears it
            self._active.add(task)
        return task

    def _leave(self, task: asyncio.Task | None) -> None:
        self._active.discard(task)  # type: ignore[arg-type]
        if not self._active:
            self._idle.set()

    @property
    def active(self) -> int:
        return len(self._active)

    async def drain(self, grace_s: float) -> int:
        """Waits for in-flight requests up to `grace_s`, then cancels the rest (rows say `shutdown`)."""
        try:
            await asyncio.wait_for(self._idle.wait(), grace_s)
            await self.settled()
            return 0
        except asyncio.TimeoutError:
            pass
        self.shutting_down = True
        left = [t for t in self._active if not t.done()]
        for t in left:
            t.cancel()
        if left:
            await asyncio.wait(left, timeout=2.0)
        await self.settled()
        return len(left)

    async def settled(self, timeout_s: float = 5.0) -> None:
        """Waits (bounded) for the shared limiter's settles of requests already answered."""
        if self._settling:
            await asyncio.wait(set(self._settling), timeout=timeout_s)

    def deadline(self, time_remaining: float | None, now: float | None = None) -> float:
        """`now`: the caller's own clock.monotonic() reading, when it just took one."""
        budget = self.request_timeout_s if time_remaining is None else min(time_remaining, self.request_timeout_s)
        return (self.clock.monotonic() if now is None else now) + budget

    def _admit(self, p: Principal, estimate: int, out: Outcome, budget: BudgetPlan | None = None) -> Awaitable[Admission]:
        """The quota check for the caller to await (the limiter's own coroutine, none of ours);
        `budget`: the caller's $ budget plan, held in the same limiter call where it can be."""
        if self.ledger.full:
            # RELIABILITY D6: the store is behind; refuse new work rather than drop rows.
            raise E.Unavailable("usage ledger backlog is full; retry shortly", reason="LEDGER_BACKLOG", retry_after_s=1.0)
        if out.span is not None:
            return self._admit_traced(self.quotas.admit(p, estimate, out.created, budget), p, out)
        return self.quotas.admit(p, estimate, out.created, budget)

    def _plan(self, p: Principal, model: str, prompt_tokens: int, max_output: int) -> BudgetPlan | None:
        """Issue 16: what the request asks of the caller's $ budgets; None for a caller without any."""
        if self.budgets is None:
            return None
        lines = self.budgets.lines(p)
        return self.budgets.plan(p, lines, model, prompt_tokens, max_output) if lines else None

    async def _admit_traced(self, admit: Awaitable[Admission], p: Principal, out: Outcome) -> Admission:
        span = spans.child(self.tracing, out.span, "tollgate.quota.admit", **{"tollgate.tier": p.tier})
        try:
            adm = await admit
            if adm.decision is not None:
                span.set_attribute("tollgate.quota.remaining", adm.decision.remaining)
            return adm
        except E.TollgateError as e:
            span.set_status(spans.Status(spans.StatusCode.ERROR, e.reason))
            raise
        finally:
            span.end()

    async def _budget(self, p: Principal, plan: BudgetPlan, adm: Admission) -> Any:
        """Issue 16: the $ hold (refused with BUDGET_EXCEEDED before any provider is called), taken
        with the quota in one limiter call where it could be (issue 20), else here."""
        if adm.budget_held is not None:
            adm.budget = adm.budget_held[1]  # held already: _finish gives it back should this raise
        res, decision = await self.budgets.complete(p, plan, adm.budget_held)
        if decision is not None and self.alerts is not None:
            self.alerts.check_budget(self.budgets.subject(p), decision)
        return res

    def _open(self, p: Principal, model: str, surface: str, out: Outcome) -> None:
        """The request's write-ahead placeholder (RELIABILITY B7); its final row replaces it."""
        if not self.ledger.tracks_open:
            return  # no store behind the ledger: no placeholder to build
        self.ledger.open(UsageRecord(out.request_id, p.key_id, p.user_id, surface, "", "", model, "", 0, 0, False,
                                     0.0, 0.0, 0, out.created, ""))

    # Every entry point is the same skeleton: _begin() (outcome, deadline, write-ahead row),
    # admit, its own call, _failed() / _cancelled() on the way out, and _finish() in `finally`
    # (one ledger row, the quota settled or refunded). Only the call and its usage differ.

    def _begin(self, p: Principal, request_id: str, model: str, surface: str, time_remaining: float | None,
               route: RouteLog, op: str = "chat", messages: Any = None) -> Outcome:
        out = Outcome(request_id, route, created=self.clock.now())
        if self.tracing is not None:
            out.span = spans.request_span(self.tracing, op, model, surface, request_id, messages)
        out.task = task = asyncio.current_task()  # _enter(), written out: once per request
        if task is not None:
            active = self._active
            if not active:
                self._idle.clear()  # set exactly while nothing is active: only the first clears it
            active.add(task)
        out.started = t0 = self.clock.monotonic()
        # deadline(time_remaining, t0), written out: once per request
        budget = self.request_timeout_s
        out.deadline = t0 + (budget if time_remaining is None or time_remaining > budget else time_remaining)
        if self.ledger.tracks_open:
            self._open(p, model, surface, out)
        return out

    def _failed(self, out: Outcome, e: E.TollgateError) -> None:
        out.status, out.error = _status_of(e), e.reason
        _with_limits(e, out.decision)

    def _cancelled(self, out: Outcome, surface: str) -> None:
        out.status = self._cancel_status(surface, out.deadline)

    async def chat(self, p: Principal, req: ChatRequest, request_id: str, time_remaining: float | None) -> tuple[ChatResult, Outcome]:
        out = self._begin(p, request_id, req.model, req.surface, time_remaining, RouteLog(), "chat", req.messages)
        prompt_est = estimate_prompt(req)
        usage = None
        try:
            plan = self._plan(p, req.model, prompt_est, req.sampling.max_tokens or 256)
            adm = out.admission = await self._admit(p, prompt_est + (req.sampling.max_tokens or 256), out, plan)
            out.decision = adm.decision
            if plan is not None:
                adm.budget = await self._budget(p, plan, adm)
            if self.alerts is not None:
                self.alerts.check_quota(p.subject, adm.token_decision or adm.decision)
            result = await self.router.chat(req, out.deadline, out.route, user_id=p.user_id)
            usage = result.usage
            if usage.estimated or (usage.prompt_tokens == 0 and usage.completion_tokens == 0):
                usage = Usage(prompt_est, estimate_text(result.text) + sum(estimate_text(t.arguments) for t in result.tool_calls), estimated=True)
            out.route.upstream_model = result.model
            out.status = "ok"
            out.finish_reason = result.finish_reason
            if out.span is not None and self.tracing.capture_content:
                spans.output(out.span, result.text)
            return result, out
        except E.TollgateError as e:
            self._failed(out, e)
            raise
        except asyncio.CancelledError:
            self._cancelled(out, req.surface)
            raise
        finally:
            # No answer: its usage built here, not up front on every request. An answer's row and
            # settlement wait until it has been handed back (see _finish).
            self._finish(p, req.model, req.surface, out, usage or Usage(estimated=True),
                               after_answer=out.status == "ok")

    async def stream(self, p: Principal, req: ChatRequest, request_id: str,
                     time_remaining: float | None) -> AsyncIterator[StreamStarted | list[Chunk] | StreamFinished]:
        out = self._begin(p, request_id, req.model, req.surface, time_remaining, RouteLog(), "stream", req.messages)
        prompt_est = estimate_prompt(req)
        reported: Usage | None = None
        # What was streamed, as a running estimate (metering/tokens.py's estimate_delta, summed as
        # the tokens come): it is only used if the provider sends no usage, and keeping every
        # token's string until the end held ~60 bytes a token per open stream. The strings are
        # kept only for a span that records the output.
        streamed = 0
        texts: list[str] | None = [] if out.span is not None and self.tracing.capture_content else None
        args: list[str] = []
        finish = ""
        try:
            plan = self._plan(p, req.model, prompt_est, req.sampling.max_tokens or 256)
            adm = out.admission = await self._admit(p, prompt_est + (req.sampling.max_tokens or 256), out, plan)
            out.decision = adm.decision
            if plan is not None:
                adm.budget = await self._budget(p, plan, adm)
            if self.alerts is not None:
                self.alerts.check_quota(p.subject, adm.token_decision or adm.decision)
            started = False
            async for batch in self.router.stream(req, out.deadline, out.route, user_id=p.user_id):
                if not started:
                    started = True
                    yield StreamStarted(out)
                for c in batch:  # once per token
                    text = c.text
                    if text:
                        # estimate_delta inlined for its common case (a short ASCII token is 1)
                        streamed += 1 if len(text) <= SINGLE_TOKEN_MAX_CHARS and text.isascii() else estimate_delta(text)
                        if texts is not None:
                            texts.append(text)
                    if c.tool_calls:
                        args.extend(t.arguments for t in c.tool_calls)
                    if c.usage is not None:
                        reported = c.usage
                    if c.finish_reason:
                        finish = c.finish_reason
                yield batch
            out.status = "ok"
            out.finish_reason = finish or "stop"
            out.usage = self._usage(reported, prompt_est, streamed, args)
            yield StreamFinished(out)
        except E.TollgateError as e:
            self._failed(out, e)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            self._cancelled(out, req.surface)
            raise
        finally:
            if texts is not None:
                spans.output(out.span, "".join(texts))
            self._finish(p, req.model, req.surface, out, out.usage or self._usage(reported, prompt_est, streamed, args))

    async def embed(self, p: Principal, req: EmbedRequest, request_id: str, time_remaining: float | None) -> tuple[EmbedResult, Outcome]:
        out = self._begin(p, request_id, req.model, req.surface, time_remaining, RouteLog(), "embed")
        est = sum(estimate_text(t) for t in req.inputs)
        usage = Usage(est, 0, estimated=True)
        try:
            plan = self._plan(p, req.model, est, 0)
            adm = out.admission = await self._admit(p, est, out, plan)
            out.decision = adm.decision
            if plan is not None:
                adm.budget = await self._budget(p, plan, adm)
            if self.alerts is not None:
                self.alerts.check_quota(p.subject, adm.token_decision or adm.decision)
            result = await self.router.embed(req, out.deadline, out.route, user_id=p.user_id)
            usage = result.usage if not result.usage.estimated and result.usage.prompt_tokens else usage
            out.status = "ok"
            return result, out
        except E.TollgateError as e:
            self._failed(out, e)
            raise
        except asyncio.CancelledError:
            self._cancelled(out, req.surface)
            raise
        finally:
            self._finish(p, req.model, req.surface, out, usage)

    async def forward(self, p: Principal, req: NativeRequest, relay: Passthrough, request_id: str,
                      time_remaining: float | None) -> AsyncIterator[ForwardStarted | bytes]:
        """Native pass-through (seed 003): admit, relay the provider's answer byte for byte, meter it.

        Yields ForwardStarted once the upstream's head is in, then the body as it arrives. One
        ledger row in `finally`, with the provider's own usage when the body reported it.
        """
        out = self._begin(p, request_id, req.model, req.surface, time_remaining, RouteLog(strategy="passthrough"),
                          "forward")
        ex: Exchange | None = None
        try:
            plan = self._plan(p, req.model, req.prompt_estimate, req.max_tokens)
            adm = out.admission = await self._admit(p, req.prompt_estimate + req.max_tokens, out, plan)
            out.decision = adm.decision
            if plan is not None:
                adm.budget = await self._budget(p, plan, adm)
            if self.alerts is not None:
                self.alerts.check_quota(p.subject, adm.token_decision or adm.decision)
            ex = await relay.open(req, out.deadline, out.route)
            yield ForwardStarted(out, ex)
            async with aclosing(ex.body()) as body:
                async for piece in body:
                    yield piece
            out.status, out.error = ("ok", "") if ex.ok else ("upstream_error", str(ex.status))
        except E.TollgateError as e:
            self._failed(out, e)
            if ex is not None and e.reason == "UPSTREAM_STREAM_BROKEN":
                relay.broke(ex)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            self._cancelled(out, req.surface)
            raise
        finally:
            usage, cost = Usage(0, 0, estimated=True), None
            if ex is not None:
                ex.close()
                usage = ex.meter.usage(req.prompt_estimate, ex.complete, ex.ok)
                bill = getattr(req, "bill", None)  # images and audio: priced as the provider bills them
                if bill is not None and ex.ok and ex.complete:
                    usage, cost = bill(ex.meter, usage)
            self._finish(p, req.model, req.surface, out, usage, cost=cost)

    def _usage(self, reported: Usage | None, prompt_est: int, streamed: int, args: list[str]) -> Usage:
        if reported is not None and not reported.estimated and (reported.prompt_tokens or reported.completion_tokens):
            return reported
        # No usage from the provider (cut, cancelled, or it never reports): what was streamed,
        # estimated delta by delta as it came (metering/tokens.py: one token per token-sized
        # delta; D2), and the tool calls' arguments.
        completion = streamed + sum(map(estimate_text, args))
        return Usage(prompt_est, completion, estimated=True)

    def _cancel_status(self, surface: str, deadline: float) -> str:
        if self.shutting_down:
            return "shutdown"
        if self.clock.monotonic() >= deadline - DEADLINE_SLACK_S:
            return "deadline_exceeded"  # the caller's deadline cancelled it, not the caller
        return "cancelled" if surface == "grpc" else "client_cancelled"

    def _finish(self, p: Principal, model: str, surface: str, out: Outcome, usage: Usage,
                after_answer: bool = False, cost: float | None = None) -> None:
        """The skeleton's last step: one ledger row and the quota settlement, the request's usage
        and cost on its outcome; must not raise (it runs in `finally`).

        `after_answer` (a unary answer, with the in-process limiter): the row is recorded and the
        reservation settled by a callback queued on the loop, which runs once the caller's code
        has handed the answer on (the bridge writes it to the socket without suspending), yet
        before the loop polls for anything new: a caller's next request finds the counters settled
        and the row buffered, and the answer does not wait for the bookkeeping. Work the loop
        already holds (another request's next step) may still see the estimate held, as it would
        have a moment earlier."""
        out.usage = usage
        active = self._active  # _leave(out.task), written out: once per request
        active.discard(out.task)  # type: ignore[arg-type]
        if not active:
            self._idle.set()
        adm, status = out.admission, out.status
        route = out.route
        target = route.target
        billable = status != "rate_limited" and target is not None
        if not billable:
            cost = 0.0
        elif cost is None:
            cost = self.catalog.cost(target.model if target else model, usage.prompt_tokens, usage.completion_tokens,
                                     usage.cached_tokens, usage.cache_write_tokens)
        if not billable:
            usage = Usage(0, 0, estimated=usage.estimated)
        row = UsageRecord(  # positional, in _ROW_FIELDS order
            out.request_id,
            p.key_id,
            p.user_id,
            surface,
            target.provider if target else "",  # provider
            target.key_id if target else "",  # provider_key_id
            (route.upstream_model or target.model) if target else model,  # model
            status,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.estimated,
            cost,
            (self.clock.monotonic() - out.started) * 1000.0,  # latency_ms
            route.tries,  # attempts
            out.created,
            out.error,
        )
        if out.span is not None:
            out.cost_usd = cost
            self._trace_finish(out, row)
        if after_answer and self.quotas.local:
            asyncio.get_running_loop().call_soon(self._close, row, adm, usage.total_tokens if billable else 0, cost)
            out.cost_usd = cost
            return
        self.ledger.record(row)
        if adm is not None and (adm.reservation is not None or adm.budget is not None):
            used_tokens = usage.total_tokens if billable else 0
            if self.quotas.local:
                try:
                    self.quotas.finish_now(adm, used_tokens)  # in process: nothing can cut it short
                    if adm.budget is not None and self.budgets is not None:
                        self.budgets.finish_now(adm.budget, cost)  # issue 16: the $ hold becomes the real cost
                except Exception:
                    pass  # the limiter's lease returns an unsettled reservation (RELIABILITY B7)
            else:
                # A shared limiter's settle is a round trip: its own task, so the answer does not
                # wait for it and a cancelled request cannot cut it short (no double charge, no
                # leak); drain() waits for these before the limiter closes.
                task = asyncio.get_running_loop().create_task(self._settle(adm, used_tokens, cost), name="quota-settle")
                self._settling.add(task)
                task.add_done_callback(self._settling.discard)
        out.cost_usd = cost

    def _trace_finish(self, out: Outcome, row: UsageRecord) -> None:
        """The ledger's span (the row is recorded right after, or queued behind the answer) and the
        request span's end. Must not raise: it runs in _finish."""
        try:
            spans.child(self.tracing, out.span, "tollgate.ledger.record", **{
                "tollgate.request_id": row.request_id, "tollgate.status": row.status,
                "tollgate.ledger.estimated": row.estimated}).end()
            spans.end_request(self.tracing, out.span, out, out.status, out.error)
        except Exception:  # a tracing bug must not cost a ledger row
            log.exception("ending a request's spans failed")

    async def _settle(self, adm: Admission, used_tokens: int, cost: float = 0.0) -> None:
        if adm.budget is not None and self.budgets is not None:
            # Both at once: the limiter sends settles queued together in one round trip (issue 20).
            await asyncio.gather(self._settle_quota(adm, used_tokens), self._settle_budget(adm.budget, cost))
        else:
            await self._settle_quota(adm, used_tokens)

    async def _settle_quota(self, adm: Admission, used_tokens: int) -> None:
        try:
            await self.quotas.finish(adm, used_tokens)
        except Exception:
            log.warning("settling a reservation failed; its lease returns it (RELIABILITY B7)")

    async def _settle_budget(self, budget: Reservation, cost: float) -> None:
        try:  # issue 16: the $ hold becomes the real (catalogue) cost
            await self.budgets.finish(budget, cost)  # type: ignore[union-attr]
        except Exception:
            log.warning("settling a budget reservation failed; its lease returns it (RELIABILITY B7)")

    def _close(self, row: UsageRecord, adm: Admission | None, used_tokens: int, cost: float = 0.0) -> None:
        """_finish's second half for an answered request on the in-process limiter (no awaits)."""
        self.ledger.record(row)
        if adm is not None and adm.reservation is not None:
            try:
                self.quotas.finish_now(adm, used_tokens)
            except Exception:
                log.exception("settling a reservation failed; its lease returns it (RELIABILITY B7)")
        if adm is not None and adm.budget is not None and self.budgets is not None:
            try:
                self.budgets.finish_now(adm.budget, cost)
            except Exception:
                log.exception("settling a budget reservation failed; its lease returns it (RELIABILITY B7)")


def _with_limits(e: E.TollgateError, decision: Decision | None) -> None:
    """Puts the admitted request's X-RateLimit-* numbers on its error (kept if already there)."""
    for k, v in limit_metadata(decision).items():
        e.metadata.setdefault(k, v)


def _status_of(e: E.TollgateError) -> str:
    if isinstance(e, E.ResourceExhausted) and e.reason == "RATE_LIMIT_EXCEEDED":
        return "rate_limited"
    if e.reason in ("BUDGET_EXCEEDED", "UNPRICED_MODEL_UNDER_BUDGET"):
        return "budget_exceeded"  # issue 16: refused before any provider was called
    if e.reason in ("LIMITER_UNAVAILABLE", "LEDGER_BACKLOG"):
        return "unavailable"  # our own dependency refused it (C4 closed, D6), no upstream was tried
    if isinstance(e, E.DeadlineExceeded):
        return "deadline_exceeded"
    if e.reason == "UPSTREAM_STREAM_BROKEN":
        return "upstream_error"
    if isinstance(e, (E.Unavailable, E.UpstreamRejected)) or e.reason == "UPSTREAM_RATE_LIMITED":
        return "upstream_error"
    if isinstance(e, (E.UpstreamBadRequest, E.InvalidArgument)):
        return "bad_request"
    if isinstance(e, E.NotFound):
        return "not_found"
    return "error"
