"""Native pass-through (seed 003): a provider-native request relayed with the gateway's key, metered.

`Passthrough.open()` picks the configured provider (by name or kind, lowest priority first, the
first whose circuit lets a key through), swaps the caller's credentials for the provider key,
and waits for the upstream's status and headers; a second key of the same provider is tried
on a connect error, 429, 5xx or a refused key before anything was relayed. There is no
cross-provider failover: the wire format belongs to one provider. The returned `Exchange`
streams the body as it arrives (bounded: MAX_RELAY_BYTES, the SSE parser's event limit) while
metering/usage_scan.py's `UsageMeter` looks for the provider's usage in it. Each key goes
through the router's gate (cool-down, breaker, the key's own limits) and every try is recorded
and judged as the router judges its own; each adapter declares its native URLs and auth headers.
services/pipeline.py admits, sequences and writes the one ledger row.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable
from urllib.parse import unquote

import aiohttp
import orjson
import yarl

from services.clock import Clock
from services.config.schema import Config, ProviderConfig
from services.core import errors as E
from services.core import spans
from services.core.scrub import Scrubber
from tollgate.json_bound import too_complex
from services.core.types import Target
from services.metering.tokens import estimate_text
from services.metering.usage_scan import UsageMeter
from services.providers.base import Adapter
from services.config.kinds import resolve
from services.providers.transport import classify_status
from services.providers.upstreams import ADAPTER_TYPES, Upstreams
from services.routing.key_gate import KeyGate
from services.routing.route_log import RouteLog

# Router.record: one try (t0 set) or skip into the route log and the metrics.
Recorder = Callable[[RouteLog, Target, str, int, "float | None"], None]

MAX_RELAY_BYTES = 50 * 1024 * 1024  # RELIABILITY E10: a larger upstream body ends the relay
MAX_TRIES = 2  # the first key and one more of the same provider, before any byte was relayed
DEFAULT_MAX_TOKENS = 256  # the reservation when the body names none (as pipeline.py does)

# What of the caller's request may reach the provider; credentials, cookies and hop-by-hop
# headers never do (RELIABILITY E9, F3). The bridge sends only these; this is the authority.
FORWARD_HEADERS = frozenset({
    "content-type", "accept", "accept-language", "anthropic-version", "anthropic-beta", "openai-beta",
    "idempotency-key", "x-goog-api-client",
})
# What of the provider's answer reaches the caller; its rate-limit headers describe the gateway's
# account and would clash with ours, content-length/-encoding no longer hold after decompression.
RELAY_HEADERS = frozenset({
    "content-type", "cache-control", "retry-after", "retry-after-ms", "request-id", "x-should-retry",
    "openai-processing-ms", "openai-version", "content-disposition",
})
CREDENTIAL_PARAMS = frozenset({"key", "api_key", "access_token"})
_METHOD = re.compile(r"[A-Z]{3,7}")
_PROVIDER = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_BAD_PATH = re.compile(r"[\x00-\x20\x7f\\#?]")
_BAD_DECODED = re.compile(r"[\x00-\x1f\x7f\\\\]")  # in a decoded form; a space may be a name's
MAX_DECODES = 4  # decoding rounds looked at; a path still changing after them is refused
_BAD_QUERY = re.compile(r"[\x00-\x20\x7f#]")
_GEMINI_MODEL = re.compile(r"models/([^/:]+)")
_MAX_TOKEN_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
_PROMPT_KEYS = frozenset({"text", "content", "system", "input", "instructions", "prompt"})
_WALK_LIMIT = 200_000  # JSON nodes looked at for a prompt estimate


@dataclass(slots=True)
class NativeRequest:
    """A provider-native request, already stripped of the caller's credentials."""

    provider: str  # "openai" | "anthropic" | "gemini", or a configured provider name
    method: str
    path: str  # below the provider's API root, percent-encoded as received
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    model: str = ""  # for the ledger and prices: from the body, or Gemini's path
    prompt_estimate: int = 0
    max_tokens: int = DEFAULT_MAX_TOKENS
    caller_secrets: tuple[str, ...] = ()  # the caller's own credentials: cut from error bodies too

    @property
    def surface(self) -> str:
        return "passthrough_" + self.provider


def native_request(provider: str, method: str, path: str, query: str, headers: list[tuple[str, str]],
                   body: bytes) -> NativeRequest:
    """Validates and cleans what the bridge packed; raises InvalidArgument for what cannot be relayed."""
    provider = provider.strip().lower()
    if not _PROVIDER.fullmatch(provider):
        raise E.InvalidArgument("provider must be a provider kind or name", reason="INVALID_PROVIDER",
                                metadata={"field": "provider"})
    method = method.upper()
    if not _METHOD.fullmatch(method) or method in ("CONNECT", "TRACE"):
        raise E.InvalidArgument(f"method {method[:16]!r} cannot be relayed", reason="INVALID_METHOD",
                                metadata={"field": "method"})
    path = path.lstrip("/")
    if not plain_path(path):
        raise E.InvalidArgument("path must be a plain path below the provider's API root: no dot segments, "
                                "backslashes or control characters, encoded or not", reason="INVALID_PATH",
                                metadata={"field": "path"})
    clean: list[tuple[str, str]] = []
    for name, value in headers:
        name = name.lower()
        if name not in FORWARD_HEADERS:
            continue
        if "\r" in value or "\n" in value or "\0" in value:
            raise E.InvalidArgument(f"header {name} holds a control character", reason="INVALID_HEADER",
                                    metadata={"field": name})
        clean.append((name, value))
    if _BAD_QUERY.search(query):
        raise E.InvalidArgument("query must be a percent-encoded query string", reason="INVALID_QUERY",
                                metadata={"field": "query"})
    req = NativeRequest(provider, method, path, strip_credentials(query), clean, body)
    _describe(req)
    return req


def plain_path(path: str) -> bool:
    """Whether `path` stays below the API root however often an upstream or a proxy decodes it.

    Every decoded form is looked at, not just the path split on a literal `/`: `..%2f..%2fapi`,
    `%2e%2e%2f`, double-encoded `%252e%252e`, `%5c`, any case. A form is refused when it holds a
    backslash or control character, or a dot segment (`.`, `..`, also `..;x` and NFKC look-alikes
    such as U+FF0E). A path still changing after MAX_DECODES rounds is refused too.
    """
    if _BAD_PATH.search(path):
        return False
    form = path
    for _ in range(MAX_DECODES):
        if not _plain_form(form):
            return False
        decoded = unquote(form, errors="replace")
        if decoded == form:
            return True
        form = decoded
    return False


def _plain_form(form: str) -> bool:
    if _BAD_DECODED.search(form):
        return False
    for f in (form, unicodedata.normalize("NFKC", form)) if not form.isascii() else (form,):
        if "\\" in f or any(seg.split(";", 1)[0].strip() in (".", "..") for seg in f.split("/")):
            return False
    return True


def strip_credentials(query: str) -> str:
    """The query string without `key=` and friends (the caller's credential must not go upstream)."""
    if not query:
        return ""
    kept = [p for p in query.split("&") if p and unquote(p.partition("=")[0]).lower() not in CREDENTIAL_PARAMS]
    return "&".join(kept)


def _describe(req: NativeRequest) -> None:
    """Model, max tokens and a prompt estimate, for the reservation and for a ledger row with no usage.

    One orjson parse (what the routed surfaces pay too) and a walk over the text-bearing strings;
    image data and other blobs are not counted. A body that is not JSON (an upload) counts 0.
    """
    m = _GEMINI_MODEL.search(req.path)
    if m:
        req.model = unquote(m.group(1))
    if req.body.lstrip()[:1] not in (b"{", b"["):
        return
    if too_complex(req.body) is not None:
        return  # E2: parsing it would stall the loop (the bridge refuses these on the routed surfaces); the upstream judges it
    try:
        doc = orjson.loads(req.body)
    except orjson.JSONDecodeError:
        return
    if isinstance(doc, dict):
        if not req.model and isinstance(doc.get("model"), str):
            req.model = doc["model"][:256]
        gen = doc.get("generationConfig")
        for v in [doc.get(k) for k in _MAX_TOKEN_KEYS] + [gen.get("maxOutputTokens") if isinstance(gen, dict) else None]:
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                req.max_tokens = min(v, 2**31 - 1)
                break
    n, seen, stack = 3, 0, [doc]
    while stack and seen < _WALK_LIMIT:
        x = stack.pop()
        seen += 1
        items = x.items() if isinstance(x, dict) else enumerate(x)
        if isinstance(x, dict) and "role" in x:
            n += 3  # per-message framing, as metering/tokens.py counts it
        for k, v in items:
            if isinstance(v, str):
                if k in _PROMPT_KEYS:
                    n += estimate_text(v) if len(v) < 65536 else round(len(v) / 4)
            elif isinstance(v, (dict, list)):
                stack.append(v)
    req.prompt_estimate = n


# --- the relay ----------------------------------------------------------------------------------


def _broken(message: str) -> E.TollgateError:
    return E.Unavailable(message, reason="UPSTREAM_STREAM_BROKEN")


@dataclass(slots=True)
class Exchange:
    """One upstream answer being relayed: its status and headers now, its body as it comes."""

    target: Target
    status: int
    headers: list[tuple[str, str]]
    resp: aiohttp.ClientResponse
    meter: UsageMeter
    deadline: float  # loop time
    idle_s: float
    complete: bool = False
    relayed: int = 0
    scrubber: Scrubber | None = None  # for an error answer's body (issue 15 point 3)
    extra: tuple[str, ...] = ()  # the caller's credentials, scrubbed as well

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    async def body(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        # An error answer may quote the key it was sent: its body is scrubbed of every secret the
        # gateway knows, holding back the last (longest secret - 1) bytes of each read so that a
        # secret cut across two reads is still found. A 2xx answer is relayed untouched.
        scrub = self.scrubber if not self.ok and self.scrubber is not None and (len(self.scrubber) or self.extra) else None
        held = b""
        while True:
            try:
                async with asyncio.timeout_at(min(self.deadline, loop.time() + self.idle_s)):
                    data = await self.resp.content.readany()
            except TimeoutError:
                if loop.time() >= self.deadline - 0.001:
                    raise E.DeadlineExceeded("the request's deadline passed while relaying", reason="DEADLINE_EXCEEDED") from None
                raise _broken(f"the upstream sent nothing for {self.idle_s:g} s") from None
            except (aiohttp.ClientError, OSError):
                # `from None`: aiohttp's errors carry request_info, whose headers hold the provider key.
                raise _broken("the upstream connection broke mid-answer") from None
            if not data:
                break
            self.relayed += len(data)
            if self.relayed > MAX_RELAY_BYTES:
                raise _broken(f"the upstream's answer is larger than {MAX_RELAY_BYTES} bytes")
            try:
                self.meter.feed(data)
            except ValueError:
                raise _broken("the upstream sent an SSE event over the size limit") from None
            if scrub is not None:
                data = scrub.scrub_bytes(held + data, self.extra)
                cut = max(0, len(data) - (max([scrub.longest] + [len(s) for s in self.extra]) - 1))
                held, data = data[cut:], data[:cut]
                if not data:
                    continue
            yield data
        if held:
            yield scrub.scrub_bytes(held, self.extra)  # type: ignore[union-attr]
        self.meter.close()
        self.complete = True

    def close(self) -> None:
        if self.complete:
            self.resp.release()
        else:
            self.resp.close()  # unfinished: drop the connection so the upstream stops (RELIABILITY B1/B2)


class Passthrough:
    """The relay: tries a provider's keys through the router's gate, records each try as the router does."""

    def __init__(self, cfg: Config, gate: KeyGate, upstreams: Upstreams, record: Recorder, clock: Clock,
                 scrubber: Scrubber | None = None, tracing: Any = None) -> None:
        self.cfg = cfg
        # Traces on: each try opens its attempt span before it is sent, so the upstream session's
        # hook puts that span's traceparent on the provider request (issue 15 point 7).
        self.tracing = tracing
        self.scrubber = scrubber  # error bodies are scrubbed of every known secret (issue 15 point 3)
        self.gate = gate
        self.upstreams = upstreams
        self.record = record  # Router.record: the route log and the metrics
        self.clock = clock

    def providers(self, name: str) -> list[ProviderConfig]:
        named = [p for p in self.cfg.providers if p.name == name]
        if not named:
            kind = resolve(name)
            named = [p for p in self.cfg.providers if kind is not None and resolve(p.kind) is kind]
        named = [p for p in named if (k := resolve(p.kind)) is not None and k.wire != "demo"]
        if not named:
            raise E.NotFound(f"no {name} provider is configured for pass-through", reason="PROVIDER_NOT_FOUND",
                             metadata={"provider": name})
        return sorted(named, key=lambda p: p.priority)

    async def open(self, req: NativeRequest, deadline: float, log: RouteLog) -> Exchange:
        """Sends the request and waits for the answer's head; raises a TollgateError when none came."""
        gate = self.gate
        loop = asyncio.get_running_loop()
        loop_deadline = loop.time() + max(0.0, deadline - self.clock.monotonic())
        tried = 0
        last: E.TollgateError | None = None
        for p in self.providers(req.provider):
            for i, k in enumerate(p.keys):
                if tried >= MAX_TRIES:
                    break
                if not gate.cooldowns.ready(k.id):
                    self._note(log, _target(p, k.id, req), "cooldown", 0, None)
                    continue
                if not gate.breaker.allow(k.id):
                    self._note(log, _target(p, k.id, req), "breaker_open", 0, None)
                    continue
                rules = gate.key_rules(k.id)
                try:
                    within = not rules or (await gate.limiter.hit("pk:" + k.id, rules)).allowed
                except BaseException:
                    gate.breaker.release_probe(k.id)  # a half-open probe must not leak (A1)
                    raise
                if not within:
                    gate.breaker.release_probe(k.id)
                    self._note(log, _target(p, k.id, req), "key_rate_limited", 0, None)
                    continue
                tried += 1
                more = tried < MAX_TRIES and i < len(p.keys) - 1
                ex, last = await self._try(p, k.id, req, loop_deadline, log, more)
                if ex is not None:
                    return ex
            if tried:
                break  # the wire format is this provider's: no failover to another one
        if last is not None:
            raise last
        raise E.Unavailable(f"no {req.provider} key can take the request now (circuits open or cooling down)",
                            reason="NO_AVAILABLE_UPSTREAM", retry_after_s=1.0)

    async def _try(self, p: ProviderConfig, key_id: str, req: NativeRequest, loop_deadline: float, log: RouteLog,
                   more: bool) -> tuple[Exchange | None, E.TollgateError | None]:
        """One attempt: (the exchange to relay, None) or (None, the error if no other key helps)."""
        gate = self.gate
        target = _target(p, key_id, req)
        secret = gate.secret(key_id)
        if any(c in secret for c in "\r\n\0"):
            gate.breaker.release_probe(key_id)
            return None, E.UpstreamRejected("the provider key is malformed", reason="PROVIDER_AUTH_FAILED")
        adapter = self.upstreams.adapter(p.kind)
        headers = dict(req.headers)
        adapter.native_headers(headers, secret)
        url = yarl.URL(_native_url(adapter, p.base_url, req.path, req.query), encoded=True)
        t0 = self.clock.monotonic()
        loop = asyncio.get_running_loop()
        session = self.upstreams.session(p.base_url)
        if self.tracing is not None:
            spans.start_attempt(self.tracing, target, log, False)  # ended by record(), like the router's
        try:
            async with asyncio.timeout_at(min(loop_deadline, loop.time() + p.timeout_s)):
                resp = await session.request(
                    req.method, url, data=req.body or None, headers=headers, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=p.timeout_s, sock_read=None))
        except TimeoutError:
            self._fail(log, target, "timeout", 0, t0)
            return None, E.DeadlineExceeded(f"the upstream did not answer within {p.timeout_s:g} s"
                                            if loop.time() < loop_deadline - 0.001 else
                                            "the request's deadline passed before the upstream answered",
                                            reason="DEADLINE_EXCEEDED")
        except aiohttp.ClientResponseError:
            self._fail(log, target, "protocol", 0, t0)  # a malformed status line or headers (E10)
            return None, _broken("the upstream sent a malformed response")
        except (aiohttp.ClientError, OSError) as exc:
            # Only the class name: aiohttp's messages can carry request_info with the key (F3).
            self._fail(log, target, "connect", 0, t0)
            return None, E.Unavailable(f"could not reach the upstream ({type(exc).__name__})",
                                       reason="UPSTREAM_UNAVAILABLE", retry_after_s=1.0)
        except BaseException:
            gate.breaker.release_probe(key_id)
            raise
        status = resp.status
        if status in (401, 403) or (more and (status >= 500 or status in (408, 429))):
            resp.close()
            self._refused(log, target, status, resp.headers, t0)
            if status in (401, 403):
                # The provider refused the gateway's key: not the caller's fault, and its message may
                # quote the key (RELIABILITY F3); say so without relaying it.
                return None, E.UpstreamRejected("provider rejected the gateway's key", reason="PROVIDER_AUTH_FAILED",
                                                metadata={"upstream_status": str(status)})
            return None, E.Unavailable(f"the upstream answered {status}", reason="UPSTREAM_UNAVAILABLE",
                                       retry_after_s=1.0)
        if resp.content_length is not None and resp.content_length > MAX_RELAY_BYTES \
                and not resp.headers.get("content-encoding"):
            resp.close()
            self._fail(log, target, "protocol", status, t0)
            return None, _broken(f"the upstream's answer is larger than {MAX_RELAY_BYTES} bytes")
        if status >= 500 or status in (408, 429):
            self._refused(log, target, status, resp.headers, t0)  # relayed as it is, and counted
        elif status >= 400:
            self._note(log, target, "bad_request", status, t0)
            gate.breaker.release_probe(key_id)
        else:
            gate.breaker.record_success(key_id)
            self._note(log, target, "ok", status, t0)
        sse = resp.headers.get("content-type", "").lower().startswith("text/event-stream")
        relay = [(k.lower(), v) for k, v in resp.headers.items() if k.lower() in RELAY_HEADERS]
        idle = self.cfg.idle_timeout_s or p.timeout_s
        return Exchange(target, status, relay, resp, UsageMeter(sse), loop_deadline, idle,
                        scrubber=self.scrubber, extra=req.caller_secrets), None

    def broke(self, ex: Exchange) -> None:
        """The body broke after the head (not the caller leaving): counts for the key's circuit."""
        self.gate.breaker.record_failure(ex.target.key_id)

    def _note(self, log: RouteLog, target: Target, outcome: str, status: int, t0: float | None) -> None:
        """One try (t0 set) or skip in the route log, and in the metrics, as the router records its own."""
        self.record(log, target, outcome, status, t0)

    def _fail(self, log: RouteLog, target: Target, outcome: str, status: int, t0: float) -> None:
        self._note(log, target, outcome, status, t0)
        self.gate.breaker.record_failure(target.key_id)

    def _refused(self, log: RouteLog, target: Target, status: int, headers, t0: float) -> None:
        """A 408, 429, 401/403 or 5xx head: judged by the status's shared meaning, as the router judges."""
        f = classify_status(status, headers, "", self.clock.now())
        if f.kind in ("rate_limited", "auth"):
            self._note(log, target, f.kind, status, t0)
            self.gate.breaker.release_probe(target.key_id)
            self.gate.cool_down(target.key_id, f)
        else:
            self._fail(log, target, f.kind, status, t0)


def _target(p: ProviderConfig, key_id: str, req: NativeRequest) -> Target:
    return Target(provider=p.name, kind=p.kind, key_id=key_id, model=req.model, base_url=p.base_url, timeout_s=p.timeout_s)


def upstream_url(wire: str, base_url: str, path: str, query: str) -> str:
    """The provider URL for a path below its API root, as the wire's adapter declares it."""
    return _native_url(ADAPTER_TYPES[wire], base_url, path, query)


def _native_url(adapter: Adapter | type[Adapter], base_url: str, path: str, query: str) -> str:
    if not plain_path(path):  # native_request refused these already; the URL is never built from one
        raise E.InvalidArgument("path must be a plain path below the provider's API root", reason="INVALID_PATH",
                                metadata={"field": "path"})
    return adapter.native_url(base_url, path, query)
